//! `GET /files/watch`: filesystem changes as server-sent events (inotify).

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use hutch_api::files::WatchEvent;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use serde::Deserialize;

use super::abs_path;
use crate::error::GuestError;
use crate::extract::ApiQuery;

/// Query of `GET /files/watch`.
#[derive(Debug, Default, Deserialize)]
pub struct WatchQuery {
    /// Absolute path of a directory or file.
    #[serde(default)]
    pub path: String,
    /// Also watch subdirectories (including ones created later).
    #[serde(default)]
    pub recursive: bool,
}

/// Most directories one watch will follow.
const MAX_WATCHES: usize = 8192;

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
}

struct Watcher {
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    recursive: bool,
    pending: std::collections::VecDeque<WatchEvent>,
}

impl Watcher {
    /// Watch `dir` and (when recursive) every directory below it.
    fn add_tree(&mut self, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if self.dirs.len() >= MAX_WATCHES {
                tracing::warn!("watch limit reached; not following {}", d.display());
                return;
            }
            match self.watches.add(&d, mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, d.clone());
                }
                Err(e) => {
                    tracing::debug!(error = %e, dir = %d.display(), "cannot watch");
                    continue;
                }
            }
            if !self.recursive {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.filter_map(Result::ok) {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }

    fn translate(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<OsString>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            self.pending.push_back(WatchEvent {
                kind: "overflow".into(),
                path: String::new(),
                is_dir: false,
            });
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&wd);
            return;
        }
        let Some(base) = self.dirs.get(&wd) else {
            return;
        };
        let path = match &name {
            Some(n) => base.join(n),
            None => base.clone(),
        };
        let is_dir = mask.contains(EventMask::ISDIR);
        let kind = if mask.contains(EventMask::CREATE) {
            "create"
        } else if mask.contains(EventMask::MODIFY) {
            "modify"
        } else if mask.intersects(EventMask::DELETE | EventMask::DELETE_SELF) {
            "delete"
        } else if mask.contains(EventMask::MOVED_FROM) {
            "move_from"
        } else if mask.contains(EventMask::MOVED_TO) {
            "move_to"
        } else if mask.contains(EventMask::ATTRIB) {
            "attrib"
        } else {
            return;
        };
        if self.recursive && is_dir && (kind == "create" || kind == "move_to") {
            self.add_tree(&path);
        }
        self.pending.push_back(WatchEvent {
            kind: kind.into(),
            path: path.to_string_lossy().into_owned(),
            is_dir,
        });
    }

    async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            match self.stream.next().await? {
                Ok(ev) => self.translate(ev.wd, ev.mask, ev.name),
                Err(e) => {
                    tracing::warn!(error = %e, "inotify read failed");
                    return None;
                }
            }
        }
    }
}

/// `GET /files/watch?path=&recursive=`: stream changes until the client disconnects.
pub async fn watch(
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, GuestError> {
    let path = abs_path(&q.path, "path")?;
    tokio::fs::metadata(&path)
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    let inotify = Inotify::init().map_err(|e| GuestError::Internal(format!("inotify: {e}")))?;
    let watches = inotify.watches();
    let stream = inotify
        .into_event_stream(vec![0u8; 4096])
        .map_err(|e| GuestError::Internal(format!("inotify: {e}")))?;
    let mut w = Watcher {
        stream,
        watches,
        dirs: HashMap::new(),
        recursive: q.recursive,
        pending: Default::default(),
    };
    let root = path.clone();
    // Adding watches walks the tree; keep it off the async thread.
    let w = tokio::task::spawn_blocking(move || {
        w.add_tree(&root);
        w
    })
    .await
    .map_err(|e| GuestError::Internal(e.to_string()))?;
    if w.dirs.is_empty() {
        return Err(GuestError::Internal(format!("cannot watch {}", q.path)));
    }
    let events = futures::stream::unfold(w, |mut w| async move {
        let ev = w.next().await?;
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Some((Ok(Event::default().event(ev.kind.clone()).data(data)), w))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
