//! A small blocking client for a node's HTTP RPC.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

/// The largest raw answer [`Client::post_raw`] reads.
pub const MAX_RAW_ANSWER: u64 = 1 << 30;

/// A node's RPC at one URL.
#[derive(Debug)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the node at `url` (such as `http://127.0.0.1:7070`).
    pub fn new(url: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: url.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn answer(
        &self,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Option<Value>> {
        let mut resp = result.map_err(|e| anyhow!("node unreachable at {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let body: Value = resp.body_mut().read_json().with_context(|| {
            format!(
                "the node at {} answered {path} with something that is not JSON",
                self.base
            )
        })?;
        match status {
            200..=299 => Ok(Some(body)),
            404 => Ok(None),
            _ => Err(refusal(status, &body)),
        }
    }

    /// `GET path`; `None` on 404.
    pub fn get(&self, path: &str) -> Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        self.answer(path, self.agent.get(&url).call())
    }

    /// `POST path` with a JSON body, asking for `accept`; the raw answer bytes
    /// (for answers that are not JSON, such as an Arrow IPC stream). An error
    /// answer is still JSON and becomes the error.
    pub fn post_raw(&self, path: &str, body: &Value, accept: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .agent
            .post(&url)
            .header("accept", accept)
            .send_json(body)
            .map_err(|e| anyhow!("node unreachable at {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_RAW_ANSWER)
            .read_to_vec()
            .with_context(|| format!("reading the answer to {path} from {}", self.base))?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(refusal(status, &body))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        self.answer(path, self.agent.post(&url).send_json(body))?
            .ok_or_else(|| anyhow!("the node at {} has no {path}", self.base))
    }
}

/// The error for a node's refusal: its status, code and message.
fn refusal(status: u16, body: &Value) -> anyhow::Error {
    let msg = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    let code = body.get("code").and_then(Value::as_str).unwrap_or("error");
    anyhow!("the node refused ({status} {code}): {msg}")
}
