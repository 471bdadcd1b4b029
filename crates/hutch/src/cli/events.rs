//! `hutch events`: the audit and lifecycle log.

use clap::Args;
use hutch_api::sandbox::{Event, Page};

use super::ConnArgs;
use super::table::Table;

/// `hutch events`.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only events of this sandbox.
    #[arg(long, value_name = "ID")]
    pub sandbox: Option<String>,
    /// Only events of this type (e.g. `sandbox.created`).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only events older than this event id (for paging).
    #[arg(long, value_name = "EVENT_ID")]
    pub before: Option<i64>,
    /// How many events to show.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Print JSON (an array of events) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch events`.
pub async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(s) = args.sandbox {
        q.push(("sandbox_id", s));
    }
    if let Some(t) = args.kind {
        q.push(("type", t));
    }
    if let Some(b) = args.before {
        q.push(("before", b.to_string()));
    }
    if let Some(l) = args.limit {
        q.push(("limit", l.to_string()));
    }
    let page: Page<Event> = client.get_json("/v1/events", &q).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page.items)?);
    } else {
        print!("{}", event_table(&page.items));
    }
    Ok(())
}

/// The `events` table.
pub fn event_table(items: &[Event]) -> String {
    let mut t = Table::new(&["ID", "TIME", "TYPE", "SANDBOX", "DATA"]);
    for e in items {
        let data = match &e.data {
            serde_json::Value::Null => String::new(),
            serde_json::Value::Object(o) if o.is_empty() => String::new(),
            v => v.to_string(),
        };
        t.row(vec![
            e.id.to_string(),
            e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
            e.kind.clone(),
            e.sandbox_id.clone().unwrap_or_else(|| "-".to_owned()),
            data,
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let e: Event = serde_json::from_value(serde_json::json!({
            "id": 7, "type": "sandbox.created", "sandbox_id": "sb-1",
            "time": "2025-01-01T00:00:00Z", "data": {"template": "base"}
        }))
        .unwrap();
        assert_eq!(
            event_table(&[e]),
            "ID  TIME                 TYPE             SANDBOX  DATA\n\
             7   2025-01-01 00:00:00  sandbox.created  sb-1     {\"template\":\"base\"}\n"
        );
    }
}
