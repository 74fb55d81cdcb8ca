//! Load for a rig: a steady submitter and bulk submissions, and what they were answered.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Rig;
use crate::Client;

impl Rig {
    /// Submits tasks from `clients` concurrent clients, each at most 50 a second, until `stop`
    /// fires, taking the bodies in turn; returns what they were answered.
    pub fn submit_until(
        &self,
        clients: usize,
        bodies: Vec<Value>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<Submissions> {
        let http = self.http.clone();
        tokio::spawn(async move {
            let one = |(http, first): (Client, usize)| {
                let (bodies, stop) = (bodies.clone(), stop.clone());
                async move {
                    let mut got = Submissions::default();
                    // Paced: a few hundred tasks a second in all, a load the checks can read back.
                    let mut pace = tokio::time::interval(Duration::from_millis(20));
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut n = first;
                    while !stop.is_cancelled() {
                        pace.tick().await;
                        n += 1;
                        let sent = Instant::now();
                        let r = http
                            .request(Method::POST, "/api/v1/tasks")
                            .timeout(Duration::from_secs(30))
                            .json(&bodies[n % bodies.len()])
                            .send()
                            .await;
                        if !got.record(r, sent).await {
                            // Down: try again shortly rather than spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    got
                }
            };
            let all = futures::future::join_all((0..clients).map(|c| one((http.clone(), c)))).await;
            all.into_iter()
                .fold(Submissions::default(), |mut all, got| {
                    all.ids.extend(got.ids);
                    all.unavailable.extend(got.unavailable);
                    all.failed.extend(got.failed);
                    all
                })
        })
    }

    /// Submits `n` tasks; returns the ids of those answered 202.
    pub async fn submit(&self, n: usize, body: &Value) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let Ok(r) = self
                .http
                .request(Method::POST, "/api/v1/tasks")
                .json(body)
                .send()
                .await
            else {
                continue;
            };
            if r.status() == 202 {
                let v: Value = r.json().await.unwrap();
                ids.push(v["id"].as_str().unwrap().parse().unwrap());
            }
        }
        ids
    }

    /// Submits `n` copies of `body` in one batch; returns the ids (all of them: a batch is
    /// accepted whole).
    pub async fn submit_batch(&self, n: usize, body: &Value) -> Vec<Uuid> {
        let r = self
            .http
            .request(Method::POST, "/api/v1/tasks/batch")
            .json(&json!({ "tasks": vec![body; n] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "the batch was accepted");
        let v: Value = r.json().await.unwrap();
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().parse().unwrap())
            .collect()
    }
}

/// What a steady submitter was answered.
#[derive(Debug, Default)]
pub struct Submissions {
    /// Answered 202: accepted.
    pub ids: Vec<Uuid>,
    /// When each submission answered 503 `unavailable` with `Retry-After` was sent.
    pub unavailable: Vec<Instant>,
    /// Anything else: another status, or no answer (the gateway died, the client gave up).
    pub failed: Vec<String>,
}

impl Submissions {
    /// Submissions not accepted, however they were refused.
    pub fn refused(&self) -> usize {
        self.unavailable.len() + self.failed.len()
    }

    /// Files an answer; false when the submission was not accepted.
    async fn record(&mut self, r: reqwest::Result<reqwest::Response>, sent: Instant) -> bool {
        match r {
            Ok(r) if r.status() == 202 => {
                let v: Value = r.json().await.unwrap();
                self.ids.push(v["id"].as_str().unwrap().parse().unwrap());
                true
            }
            Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                self.unavailable.push(sent);
                false
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                self.failed.push(format!("{status}: {body}"));
                false
            }
            Err(e) => {
                self.failed.push(format!("no answer: {e}"));
                false
            }
        }
    }
}
