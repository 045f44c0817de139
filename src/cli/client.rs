//! A small client for a node's local API. It sends the API token (`api::auth`) with every
//! request when it has one.

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;

use crate::api::auth::ApiToken;

pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<ApiToken>,
}

impl Client {
    /// `addr` is `host:port`; `token` is what [`ApiToken::for_client`] found.
    pub fn new(addr: &str, token: Option<ApiToken>) -> Client {
        Client {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            token,
        }
    }

    /// `http://host:port` of the node.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t.to_hex()),
            None => req,
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
            .check(self.request(reqwest::Method::GET, path).send().await)
            .await?;
        resp.json()
            .await
            .context("the node sent an unreadable answer")
    }

    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .check(self.request(reqwest::Method::GET, path).send().await)
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
        let req = with_body(self.request(reqwest::Method::POST, path));
        let resp = self.check(req.send().await).await?;
        resp.json()
            .await
            .context("the node sent an unreadable answer")
    }
}
