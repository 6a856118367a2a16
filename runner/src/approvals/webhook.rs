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
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let backoff = [1, 2, 4, 8, 16].map(Duration::from_secs).to_vec();
        Ok(Self { url, client, backoff })
    }

    pub fn body(approval: &Approval) -> serde_json::Value {
        json!({
            "text": format!(
                "Approval {} requested: {} wants to run {} ({}); approve with `portcullis approvals approve {}` before {}",
                approval.id, approval.requester.describe(), approval.tool, approval.plan_hash, approval.id,
                crate::plans::key::rfc3339(approval.expires_at),
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
