//! A local mock of the Graph API (axum on 127.0.0.1:0) for the edges' tests: it records every
//! `POST /{version}/{number}/messages` (path, Authorization header, JSON body) and answers what
//! the test scripted, else 200 with a message id; a refused token gets Meta's 401 (code 190).
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer: HTTP status and body.
pub type Answer = (u16, String);

#[derive(Default)]
pub struct Graph {
    script: Mutex<VecDeque<Answer>>,
    refused_tokens: Mutex<HashSet<String>>,
    pub posts: Mutex<Vec<Post>>,
    /// How long each answer waits (a slow provider keeps sends in flight).
    pub delay_ms: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Post {
    pub path: String,
    pub authorization: String,
    pub body: serde_json::Value,
}

impl Graph {
    /// The next answers, in order (then 200 again).
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }

    /// Every post carrying `token` as its bearer gets 401 (an expired or revoked token).
    pub fn refuse_token(&self, token: &str) {
        self.refused_tokens
            .lock()
            .unwrap()
            .insert(format!("Bearer {token}"));
    }

    pub fn slow_down(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// The posts whose callback data is `callback`.
    pub fn posts_for(&self, callback: &str) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.body["biz_opaque_callback_data"] == callback)
            .collect()
    }
}

/// A Cloud API error answer with `code`.
pub fn error(status: u16, code: u32) -> Answer {
    (
        status,
        format!(
            r#"{{"error": {{"message": "scripted", "type": "OAuthException", "code": {code}, "error_data": {{"details": "d"}}, "fbtrace_id": "AbC"}}}}"#
        ),
    )
}

/// Starts the mock: it and its base URL.
pub async fn start() -> (Arc<Graph>, String) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let graph = Arc::new(Graph::default());
    let app = axum::Router::new()
        .route(
            "/{version}/{number}/messages",
            post(
                |State(g): State<Arc<Graph>>,
                 Path((version, number)): Path<(String, String)>,
                 headers: HeaderMap,
                 body: String| async move {
                    let authorization = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let refused = g.refused_tokens.lock().unwrap().contains(&authorization);
                    let n = {
                        let mut posts = g.posts.lock().unwrap();
                        posts.push(Post {
                            path: format!("/{version}/{number}/messages"),
                            authorization,
                            body: serde_json::from_str(&body).unwrap_or_default(),
                        });
                        posts.len()
                    };
                    let (status, body) = if refused {
                        error(401, 190)
                    } else {
                        g.script.lock().unwrap().pop_front().unwrap_or_else(|| {
                            (
                                200,
                                format!(
                                    r#"{{"messaging_product": "whatsapp", "contacts": [{{"input": "x", "wa_id": "x"}}], "messages": [{{"id": "wamid.M{n}"}}]}}"#
                                ),
                            )
                        })
                    };
                    let delay = g.delay_ms.load(Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    (StatusCode::from_u16(status).unwrap(), body)
                },
            ),
        )
        .route(
            "/{version}/{number}",
            get(|Path((_, number)): Path<(String, String)>| async move {
                format!(r#"{{"id": "{number}"}}"#)
            }),
        )
        .with_state(graph.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (graph, url)
}
