//! The gateway's side: spot a push among the requests it forwards, check it, and refuse it in
//! a way `git push` prints.

use super::{Limits, Place, PushCommands, inspect_push, rejection};
use crate::dlp::Scanner;
use crate::gateway::Blocked;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, request::Parts};

/// Content type of a receive-pack request.
pub const REQUEST_CONTENT_TYPE: &str = "application/x-git-receive-pack-request";

/// What git prints after the findings, as `remote:` lines.
const ADVICE: &str = "Remove the secret from every pushed commit (git commit --amend, git rebase -i) and push again.";

/// Whether a request is a git push over smart HTTP. Either sign (the path or the content
/// type) counts, so a push cannot dodge the gate by leaving one out.
pub fn is_push(method: &Method, path: &str, content_type: Option<&[u8]>) -> bool {
    let by_type = content_type.is_some_and(|ct| {
        ct.split(|&b| b == b';').next().is_some_and(|t| {
            t.trim_ascii()
                .eq_ignore_ascii_case(REQUEST_CONTENT_TYPE.as_bytes())
        })
    });
    *method == Method::POST && (path.ends_with("/git-receive-pack") || by_type)
}

/// Check a request whose whole body the gateway holds. Not a push: `Ok`. A clean push: `Ok`
/// (forward it unchanged). A push carrying a secret or one that cannot be read: the answer
/// refusing it, before anything reaches upstream.
pub(crate) fn check(scanner: &Scanner, parts: &Parts, body: &[u8]) -> Result<(), Blocked> {
    let content_type = parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    if !is_push(&parts.method, parts.uri.path(), content_type) {
        return Ok(());
    }
    let commands = match PushCommands::parse(body) {
        Ok(c) => c,
        // Without the command list there is no report git could show: a plain refusal.
        Err(e) => {
            return Err(Blocked {
                status: 403,
                reason: e.to_string(),
                answer: None,
            });
        }
    };
    match off_runtime(|| inspect_push(body, scanner, &Limits::default())) {
        Ok(verdict) => {
            for f in &verdict.findings {
                tracing::warn!(rule = %f.rule_id, action = ?f.action, place = %f.place, "dlp finding in git push");
            }
            match verdict.reason() {
                None => {
                    tracing::info!(
                        objects = verdict.objects,
                        thin_deltas = verdict.thin_deltas,
                        inflated = verdict.inflated,
                        refs = verdict.commands.updates.len(),
                        "git push checked"
                    );
                    Ok(())
                }
                Some(reason) => {
                    let mut message = vec![
                        "Hutch blocked this push before it reached the remote: it carries a secret."
                            .to_string(),
                    ];
                    for (place, rules) in verdict.blocking_places() {
                        let s = if rules.len() > 1 { "s" } else { "" };
                        message.push(format!("  {place} (DLP rule{s}: {})", rules.join(", ")));
                        if let Place::Change { base } = place {
                            // Only upstream's old trees say which file that is; the sandbox's
                            // clone has them.
                            message.push(format!(
                                "    (which file: git rev-list --objects --all | grep {base})"
                            ));
                        }
                    }
                    message.push(ADVICE.to_string());
                    Err(refuse(
                        &commands,
                        format!("blocked by Hutch: {reason}"),
                        None,
                        &message.join("\n"),
                    ))
                }
            }
        }
        Err(e) => {
            let why = e.to_string();
            let message = format!(
                "Hutch blocked this push before it reached the remote: {why}. A push the secret \
                 scanner cannot read is not forwarded."
            );
            Err(refuse(
                &commands,
                format!("blocked by Hutch: {why}"),
                Some(&why),
                &message,
            ))
        }
    }
}

/// The refusal: a report-status answer when the client reads one, else a plain 403.
fn refuse(
    commands: &PushCommands,
    reason: String,
    unpack_error: Option<&str>,
    message: &str,
) -> Blocked {
    if !commands.wants_report() {
        return Blocked {
            status: 403,
            reason,
            answer: None,
        };
    }
    let (content_type, body) = rejection(commands, &reason, unpack_error, message);
    // 200: git reads the per-ref status only from a successful response.
    Blocked {
        status: 200,
        reason,
        answer: Some((content_type, Bytes::from(body))),
    }
}

/// Run CPU-heavy `f` (inflating and scanning up to [`Limits::max_total_inflated`] bytes)
/// without stalling the other tasks of a multi-threaded runtime.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_recognised() {
        let ct = Some(REQUEST_CONTENT_TYPE.as_bytes());
        assert!(is_push(&Method::POST, "/r.git/git-receive-pack", ct));
        assert!(is_push(&Method::POST, "/r.git/git-receive-pack", None));
        assert!(is_push(
            &Method::POST,
            "/elsewhere",
            Some(b"Application/X-Git-Receive-Pack-Request; x=y")
        ));
        assert!(!is_push(&Method::GET, "/r.git/info/refs", None));
        assert!(!is_push(
            &Method::POST,
            "/r.git/git-upload-pack",
            Some(b"application/x-git-upload-pack-request")
        ));
    }
}
