//! Replies on one wildcard inbox, routed by token.
//!
//! An atomic batch needs replies to two of its messages, and a batched direct get
//! answers one request with many messages; async-nats' `request` fits neither. One
//! subscription per store, not one per call, keeps a SUB/UNSUB pair off every append.

use async_nats::{Client, Message};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

#[derive(Debug)]
pub(crate) struct ReplyMux {
    prefix: String,
    next: AtomicU64,
    routes: Routes,
    task: tokio::task::JoinHandle<()>,
}

/// One registered reply route; unregisters itself on drop.
pub(crate) struct Route {
    pub(crate) subject: String,
    pub(crate) replies: mpsc::UnboundedReceiver<Message>,
    token: u64,
    routes: Routes,
}

impl Drop for Route {
    fn drop(&mut self) {
        lock(&self.routes).remove(&self.token);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReplyMux {
    pub(crate) async fn start(client: &Client) -> Result<ReplyMux, async_nats::SubscribeError> {
        let prefix = client.new_inbox();
        let mut sub = client.subscribe(format!("{prefix}.*")).await?;
        let routes: Routes = Arc::default();
        let task_routes = routes.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let token = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(token) = token {
                    if let Some(tx) = lock(&task_routes).get(&token) {
                        let _ = tx.send(msg);
                    }
                }
            }
        });
        Ok(ReplyMux {
            prefix,
            next: AtomicU64::new(1),
            routes,
            task,
        })
    }

    pub(crate) fn route(&self) -> Route {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).insert(token, tx);
        Route {
            subject: format!("{}.{token}", self.prefix),
            replies: rx,
            token,
            routes: self.routes.clone(),
        }
    }
}

impl Drop for ReplyMux {
    fn drop(&mut self) {
        self.task.abort();
    }
}
