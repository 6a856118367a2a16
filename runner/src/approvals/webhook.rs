//! Notifies a webhook of each new pending approval: a JSON POST shaped for chat and ticket
//! systems (`text` for a Slack incoming webhook, `approval` for anything that reads fields).
//! Delivery is best effort with retries, off the request path: a failure is logged and never
//! approves, denies or loses the approval, which stays pending in the store either way.

use std::time::Duration;

use serde_json::json;

use super::Approval;

pub struct Webhook {
    url: String,
    client: reqwest::Client,
    /// Delays before the retries after the first attempt.
    pub backoff: Vec<Duration>,
}

impl Webhook {
    pub fn new(url: String) -> anyhow::Result<Self> {
        // reqwest is built without a bundled provider (the workspace uses ring everywhere).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let backoff = [1, 2, 4, 8, 16].map(Duration::from_secs).to_vec();
        Ok(Self { url, client, backoff })
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

    /// Delivers in the background; returns at once.
    pub fn notify(self: &std::sync::Arc<Self>, approval: &Approval) {
        let hook = self.clone();
        let (id, body) = (approval.id.clone(), Self::body(approval));
        tokio::spawn(async move {
            match hook.deliver(&body).await {
                Ok(attempts) => tracing::info!(approval = %id, attempts, "approval webhook delivered"),
                Err(e) => tracing::warn!(approval = %id, error = %e, "approval webhook not delivered; the approval stays pending"),
            }
        });
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
    use std::sync::{Arc, Mutex};

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

    fn hook(url: String) -> Webhook {
        let mut hook = Webhook::new(url).unwrap();
        hook.backoff = vec![Duration::from_millis(10); 3];
        hook
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

    #[tokio::test]
    async fn delivery_gives_up_and_says_why() {
        let (url, seen) = receiver(usize::MAX).await;
        let err = hook(url).deliver(&body()).await.unwrap_err();
        assert!(err.contains("4 attempts failed") && err.contains("503"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 4);
    }
}
