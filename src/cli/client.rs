//! A small client for a node's local API.

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(addr: &str) -> Client {
        Client {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub fn is_unreachable(err: &anyhow::Error) -> bool {
        err.chain().any(|e| {
            e.downcast_ref::<reqwest::Error>()
                .is_some_and(|r| r.is_connect())
        })
    }

    async fn check(
        &self,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = resp.with_context(|| {
            format!(
                "no hearth node answers at {} (start one with `hearth node`, or pass --api)",
                self.base
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        Err(anyhow!("{msg} (HTTP {status})"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .check(self.http.get(format!("{}{path}", self.base)).send().await)
            .await?;
        resp.json()
            .await
            .context("the node sent an unreadable answer")
    }

    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .check(self.http.get(format!("{}{path}", self.base)).send().await)
            .await?;
        Ok(resp.bytes().await?.to_vec())
    }

    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        self.post(path, |req| req.body(body)).await
    }

    pub async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.post(path, |req| req.json(body)).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let req = with_body(self.http.post(format!("{}{path}", self.base)));
        let resp = self.check(req.send().await).await?;
        resp.json()
            .await
            .context("the node sent an unreadable answer")
    }
}
