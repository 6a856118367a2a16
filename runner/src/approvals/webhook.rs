//! Notifies a webhook of each new pending approval: a JSON POST shaped for chat and ticket
//! systems (`text` for a Slack incoming webhook, `approval` for anything that reads fields).
//! Delivery is off the request path, with retries, and at least once: the store records which
//! approvals the webhook accepted (a 2xx answer), and [`Webhook::redeliver`] sends the notice of
//! every other pending approval again, at the runner's start and then every minute, until the
//! webhook takes it or the approval is no longer pending. A receiver may so see a notice twice
//! (the runner stopped between the 2xx and recording it). A failure is logged and never
//! approves, denies or loses the approval, which stays pending in the store either way.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{Approval, Approvals};
use crate::service::serve::unix_now;

pub struct Webhook {
    url: String,
    client: reqwest::Client,
    /// Delays before the retries after the first attempt.
    pub backoff: Vec<Duration>,
    /// How often the notices not yet accepted are sent again.
    pub redelivery: Duration,
    /// Approvals whose notice is being delivered now: a redelivery pass skips them.
    in_flight: Mutex<HashSet<String>>,
}

impl Webhook {
    pub fn new(url: String) -> anyhow::Result<Self> {
        // reqwest is built without a bundled provider (the workspace uses ring everywhere).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let backoff = [1, 2, 4, 8, 16].map(Duration::from_secs).to_vec();
        Ok(Self { url, client, backoff, redelivery: Duration::from_secs(60), in_flight: Mutex::default() })
    }

    pub fn body(approval: &Approval) -> serde_json::Value {
        json!({
            "text": format!(
                "Approval {} requested: {} wants to run {} ({}); approve with `portcullis approvals approve {}` before {}",
                approval.id, approval.requester.describe(), approval.tool, approval.plan_hash, approval.id,
                crate::store::rfc3339(approval.expires_at),
            ),
            "approval": approval.summary(),
        })
    }

    /// Delivers in the background and records the delivery in `approvals`; returns at once.
    /// Returns the task, or `None` when this approval's notice is already on its way.
    pub fn notify(self: &Arc<Self>, approval: &Approval, approvals: &Approvals) -> Option<tokio::task::JoinHandle<()>> {
        let id = approval.id.clone();
        if !self.in_flight.lock().ok()?.insert(id.clone()) {
            return None;
        }
        let (hook, approvals, body) = (self.clone(), approvals.clone(), Self::body(approval));
        Some(tokio::spawn(async move {
            match hook.deliver(&body).await {
                Ok(attempts) => match approvals.mark_notified(&id, unix_now()) {
                    Ok(()) => tracing::info!(approval = %id, attempts, "approval webhook delivered"),
                    Err(e) => tracing::warn!(approval = %id, error = %e, "approval webhook delivered, but not recorded: it may be sent again"),
                },
                Err(e) => tracing::warn!(approval = %id, error = %e, "approval webhook not delivered; the approval stays pending and its notice is sent again"),
            }
            if let Ok(mut in_flight) = hook.in_flight.lock() {
                in_flight.remove(&id);
            }
        }))
    }

    /// Sends again the notice of every pending approval that the webhook has not accepted (and
    /// that is not on its way now). Returns the deliveries started.
    pub fn redeliver(self: &Arc<Self>, approvals: &Approvals) -> Vec<tokio::task::JoinHandle<()>> {
        match approvals.unnotified(unix_now()) {
            Ok(waiting) => waiting.iter().filter_map(|a| self.notify(a, approvals)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "approval state unavailable: no webhook redelivery this time");
                Vec::new()
            }
        }
    }

    /// [`Self::redeliver`] now, and then every [`Self::redelivery`], for as long as the task runs.
    pub fn redeliver_forever(self: Arc<Self>, approvals: Approvals) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(self.redelivery);
            loop {
                every.tick().await;
                let started = self.redeliver(&approvals).len();
                if started > 0 {
                    tracing::info!(approvals = started, "approval webhook: notices not yet accepted sent again");
                }
            }
        })
    }

    /// POSTs `body` until a 2xx answer, with the backoff between attempts. Returns the number
    /// of attempts made.
    pub async fn deliver(&self, body: &serde_json::Value) -> Result<usize, String> {
        let mut last = String::new();
        for attempt in 0..=self.backoff.len() {
            if attempt > 0 {
                tokio::time::sleep(self.backoff[attempt - 1]).await;
            }
            match self.client.post(&self.url).json(body).send().await {
                Ok(r) if r.status().is_success() => return Ok(attempt + 1),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("{} attempts failed, the last with {last}", self.backoff.len() + 1))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A real HTTP receiver that fails the first `failures` deliveries.
    async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), count.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let (s, c) = (s.clone(), c.clone());
                async move {
                    s.lock().unwrap().push(body);
                    if c.fetch_add(1, Ordering::SeqCst) < failures {
                        http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    fn hook(url: String) -> Arc<Webhook> {
        let mut hook = Webhook::new(url).unwrap();
        hook.backoff = vec![Duration::from_millis(10); 3];
        Arc::new(hook)
    }

    fn body() -> serde_json::Value {
        json!({"text": "Approval apr_1 requested", "approval": {"id": "apr_1"}})
    }

    #[tokio::test]
    async fn delivery_is_retried_until_accepted() {
        let (url, seen) = receiver(2).await;
        assert_eq!(hook(url).deliver(&body()).await, Ok(3));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2]["approval"]["id"], "apr_1");
    }

    /// The webhook is down when the approval is requested, and the runner restarts before it
    /// is back: the new runner's redelivery sends the notice, records it, and sends it once.
    #[tokio::test]
    async fn a_notice_the_webhook_never_took_is_sent_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let approvals = super::super::tests::approvals(&dir);
        let claims = super::super::tests::claims(Some("alice"), &[], r#"{"namespace":"team-a"}"#);
        let pending = match approvals.gate(&claims, serde_json::Map::new(), unix_now()).unwrap() {
            super::super::Gate::Requested(a) => a,
            other => panic!("{other:?}"),
        };
        let (down, refused) = receiver(usize::MAX).await;
        hook(down).notify(&pending, &approvals).unwrap().await.unwrap();
        assert_eq!(refused.lock().unwrap().len(), 4, "every attempt refused");
        assert_eq!(approvals.get(&pending.id).unwrap().unwrap().notified_at, None);

        // A new runner on the same store, the webhook up again.
        let (up, seen) = receiver(0).await;
        let hook = hook(up);
        for task in hook.redeliver(&approvals) {
            task.await.unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(seen.lock().unwrap()[0]["approval"]["id"], pending.id.as_str());
        assert!(approvals.get(&pending.id).unwrap().unwrap().notified_at.is_some(), "recorded as delivered");
        assert!(hook.redeliver(&approvals).is_empty(), "a notice accepted is not sent again");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn delivery_gives_up_and_says_why() {
        let (url, seen) = receiver(usize::MAX).await;
        let err = hook(url).deliver(&body()).await.unwrap_err();
        assert!(err.contains("4 attempts failed") && err.contains("503"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 4);
    }
}
