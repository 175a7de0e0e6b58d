//! The application's background tasks, and what happens when one stops.
//!
//! **What it owns.** The tasks that must run for as long as the server does — the Key Vault key
//! refresh and the token issuer's key-set refresh — and [`BackgroundTasks::failure`], which
//! completes as soon as any of them ends or panics.
//!
//! **Why stopping the process is the answer.** Each of these tasks is a loop that never returns;
//! if one does, or panics, the key it keeps fresh silently stops changing: a rotated or revoked
//! key would keep signing, or new issuer keys would never be accepted. A process that goes on
//! serving in that state fails open, so the application stops instead: it logs which task ended,
//! stops accepting, drains, and `main` exits non-zero, which makes the Functions host start a new
//! process with fresh tasks (docs/azure-behaviour.md §1.2: a non-zero exit is restarted). This is
//! simpler to reason about than a half-alive process answering 503, and a crash loop is visible in
//! the host's logs rather than hidden behind healthy-looking 200s.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// A background task stopped, and so must the process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("background task `{task}` {how}; stopping so that the Functions host starts a new process")]
pub struct TaskFailure {
    /// The task's name (with the hub, for a hub's key refresh).
    pub task: String,
    /// `returned` or `panicked`.
    pub how: &'static str,
}

/// The running background tasks, by name. Dropping it aborts them.
#[derive(Debug, Default)]
pub struct BackgroundTasks {
    running: JoinSet<()>,
    names: HashMap<Id, String>,
}

impl BackgroundTasks {
    /// Start `task`, named `name` in the log line if it ever stops.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.running.spawn(task);
        self.names.insert(handle.id(), name.into());
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no task was started.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Completes when the first task returns or panics (never, if there are none), with which
    /// one and how.
    pub async fn failure(&mut self) -> TaskFailure {
        let (id, how) = match self.running.join_next_with_id().await {
            None => return std::future::pending().await,
            Some(Ok((id, ()))) => (id, "returned"),
            Some(Err(error)) => (
                error.id(),
                if error.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                },
            ),
        };
        TaskFailure {
            task: self
                .names
                .remove(&id)
                .unwrap_or_else(|| "unnamed".to_owned()),
            how,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_first_task_to_stop_is_named_and_the_others_keep_running() {
        let mut tasks = BackgroundTasks::default();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("returns", async {
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        tasks.spawn("panics", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            panic!("injected failure");
        });
        assert_eq!(
            tasks.failure().await,
            TaskFailure {
                task: "panics".to_owned(),
                how: "panicked"
            }
        );
        assert_eq!(
            tasks.failure().await,
            TaskFailure {
                task: "returns".to_owned(),
                how: "returned"
            }
        );
        assert_eq!(tasks.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_tasks_there_is_never_a_failure() {
        let mut tasks = BackgroundTasks::default();
        let waited = tokio::time::timeout(Duration::from_secs(3600), tasks.failure()).await;
        assert!(waited.is_err(), "no task, so no failure");
    }
}
