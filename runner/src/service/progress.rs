//! MCP progress for tools/call: while a job runs, each line it writes to its progress channel
//! (see [`crate::sandbox::progress`]) goes to the caller as `notifications/progress`, when the
//! request's `_meta.progressToken` asked for it. On a Streamable HTTP session rmcp routes these
//! into the call's own event stream, ahead of its result.

use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use tokio::sync::mpsc;

use crate::sandbox::{Backend, JobOutput, JobSpec, SandboxError};
use crate::service::queue::Slot;

/// Lines waiting between the job and the caller. Beyond this the sandbox side coalesces to
/// the latest line, so a slow caller sees fewer, fresher messages and never slows the job.
const QUEUE: usize = 8;

/// Runs `job` on `backend` in its queue `slot`, until it ends or the request is cancelled
/// (`context.ct`). With a progress token in the request, every progress line becomes one
/// notification (`progress` counts 1, 2, 3, ...; `message` is the line), and all of them are
/// sent before this returns, so before the result. Without one the lines are discarded, and
/// so are those of a cancelled request, which gets nothing more.
pub async fn run_reporting_progress(
    slot: Slot<'_>,
    backend: &dyn Backend,
    mut job: JobSpec,
    context: &RequestContext<RoleServer>,
) -> Result<JobOutput, SandboxError> {
    let cancel = &context.ct;
    let Some(token) = context.meta.get_progress_token() else {
        return slot.run(backend, job, cancel).await;
    };
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
    job.progress = Some(tx);
    let peer = context.peer.clone();
    let notify = async move {
        let mut progress = 0u32;
        // Ends when the backend drops the sink, which it does once the job is gone.
        while let Some(line) = rx.recv().await {
            if cancel.is_cancelled() {
                continue;
            }
            progress += 1;
            let param = ProgressNotificationParam::new(token.clone(), f64::from(progress)).with_message(line);
            if let Err(e) = peer.notify_progress(param).await {
                // The caller is gone; the job runs on and its lines are drained here.
                tracing::debug!(error = %e, "progress notification not sent");
            }
        }
    };
    let (out, ()) = tokio::join!(slot.run(backend, job, cancel), notify);
    out
}
