//! Serves the local API over HTTP/1.1, every connection a task of one set, so that stopping
//! the node ends them all within a bound. (`axum::serve`'s graceful shutdown waits for every
//! request in progress, and a client that sent half a request and then nothing kept a node
//! from stopping, and its database open, for ever.)

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long requests in progress when the node stops may take to finish; connections still
/// open then are closed. Every answer but a download is made from memory or the local
/// database, far within it; a download still streaming then is cut short (its client gets
/// fewer bytes than announced, and fetches again from the restarted node).
pub const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's head, the request line and headers: a
/// connection that sends less (a stuck or hostile client) is closed then, not kept open.
pub const HEAD_WAIT: Duration = Duration::from_secs(30);

/// Connections served at once. A browser opens at most six to one host, the CLI and a
/// Prometheus scraper one each: this leaves room for several of each, and keeps a client that
/// opens connections without end from taking the file descriptors the node's peers, database
/// and blobs need (further connections wait in the kernel's backlog until one ends).
pub const MAX_CONNECTIONS: usize = 64;

/// How long the accept loop pauses after the operating system refused a connection (out of
/// file descriptors, say) before it accepts again.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `stop` changes, then lets the requests in progress finish
/// for at most [`DRAIN_WAIT`] and closes every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((io, _)) => {
                    connections.spawn(connection(io, app.clone(), draining.clone()));
                }
                Err(e) => {
                    tracing::warn!("the local API could not accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = drain.send(true);
    let drained = tokio::time::timeout(DRAIN_WAIT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "local API connections still open {} s after the stop; closing them",
            DRAIN_WAIT.as_secs()
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// One client's connection, until it ends or, once `draining`, its request in progress does.
async fn connection(io: TcpStream, app: Router, mut draining: watch::Receiver<bool>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEAD_WAIT);
    let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    // The `Ref` the wait returns is dropped at once: it must not be held across an await.
    let drain = async move {
        let _ = draining.wait_for(|d| *d).await;
    };
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = drain => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("local API connection ended: {e}");
    }
}
