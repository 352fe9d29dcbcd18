//! A CONNECT tunnel through a proxy, for `https` receivers: TCP to the proxy, `CONNECT
//! host:port` with the proxy's credentials, its answer read like any other (a 2xx opens the
//! tunnel), then TLS to the receiver inside the tunnel, trusting what a direct connection
//! trusts. The receiver sees the same request as it would directly; the proxy sees only the
//! host and port. `http` receivers need no tunnel: their requests go to the proxy in absolute
//! form (the sink writes that head).

use super::Failure;
use super::connect::{Connector, Open};
use crate::sink::Webhook;
use crate::sink::proxy::Proxy;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::os::fd::AsRawFd;
use tokio_util::either::Either;
use tower_service::Service;

/// Opens a connection to the hook's receiver through a tunnel `proxy` opens.
pub(super) async fn tunnel(
    connector: &mut Connector,
    proxy: &Proxy,
    hook: &Webhook,
) -> Result<Open, Failure> {
    let host = hook.url.host().ok_or("the URL has no host")?;
    let authority = format!("{host}:{}", hook.url.port_u16().unwrap_or(443));
    std::future::poll_fn(|cx| connector.tcp.poll_ready(cx)).await?;
    let tcp = connector
        .tcp
        .call(proxy.uri.clone())
        .await
        .map_err(|e| format!("proxy {}: {e}", proxy.shown))?
        .into_inner();
    let socket = tcp.as_raw_fd();
    let mut open = Open::new(Either::Left(tcp), socket);
    open.write_request(&connect_head(&authority, proxy), b"")
        .await?;
    let answer = open
        .final_head()
        .await
        .map_err(|e| format!("proxy {}: CONNECT {authority}: {e}", proxy.shown))?;
    if !answer.status.is_success() {
        return Err(format!(
            "proxy {} answered CONNECT {authority} with {}",
            proxy.shown, answer.status
        )
        .into());
    }
    if !open.unread().is_empty() {
        return Err(format!("proxy {} sent bytes after opening the tunnel", proxy.shown).into());
    }
    let Either::Left(tcp) = open.io else {
        return Err("the tunnel is not plain TCP".into());
    };
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| format!("{host}: {e}"))?
        .to_owned();
    let tls = connector
        .tunnel_tls
        .connect(name, TokioIo::new(TokioIo::new(tcp)))
        .await?;
    let tls = hyper_rustls::MaybeHttpsStream::Https(TokioIo::new(tls));
    Ok(Open::new(Either::Right(TokioIo::new(tls)), socket))
}

/// `CONNECT host:port`, with `Proxy-Authorization` if the proxy has credentials.
fn connect_head(authority: &str, proxy: &Proxy) -> Vec<u8> {
    let mut head = format!(
        "CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: {}\r\n",
        crate::sink::USER_AGENT_VALUE
    )
    .into_bytes();
    if let Some(auth) = &proxy.authorization {
        head.extend_from_slice(b"proxy-authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}
