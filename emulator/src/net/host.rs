//! Host backend of the transport API: kernel sockets on loopback.
//!
//! Contract: each device interface gets its own loopback address
//! (127.77.S.N for the site address 10.77.S.N, see [`host_address`]) and binds
//! its real ports. When the process may not bind ports below 1024 (no root,
//! no `CAP_NET_BIND_SERVICE`), every such port is moved up by the fixed
//! [`PORT_OFFSET`] (502 -> 10502, 443 -> 10443); the decision is taken once per
//! process by [`privileged_ports`] and reported by [`Stack::public_port`].
//! Outbound connections leave from the interface's own address, so a peer
//! sees the device's IP; a cellular device's sessions
//! ([`Stack::connect_tcp_carrier`]) leave from its carrier NAT pool
//! ([`carrier_address`]: 127.78.S.2-251), a random address per session.
//! Without carrier ([`Stack::set_carrier`]: a Wi-Fi side with no
//! association) a new connection is reset as soon as it is accepted, an
//! outbound one fails, an accepted one fails at its next read or write, and
//! datagrams are neither sent nor received (decided when the service
//! accepts or receives; services always wait there, so at once).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use super::{BoxStream, Datagram, Listener, Stack};

/// Added to ports below 1024 when the process may not bind them.
pub const PORT_OFFSET: u16 = 10_000;

/// Loopback address used in host mode for site address `ip`: 127.77.S.N.
pub fn host_address(ip: Ipv4Addr) -> Ipv4Addr {
    let [_, _, s, n] = ip.octets();
    Ipv4Addr::new(127, 77, s, n)
}

/// Whether this process may bind ports below 1024 (probed once, on a
/// loopback address no device uses).
pub fn privileged_ports() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::new(127, 77, 255, 254), 1))
            .map(drop)
            .map(|_| true)
            .unwrap_or_else(|e| e.kind() != io::ErrorKind::PermissionDenied)
    })
}

/// Maps a service port to the port actually bound in host mode.
pub fn map_port(port: u16) -> u16 {
    if port != 0 && port < 1024 && !privileged_ports() {
        port + PORT_OFFSET
    } else {
        port
    }
}

/// A device interface on kernel loopback.
#[derive(Debug, Clone)]
pub struct HostStack {
    ip: Ipv4Addr,
    /// The link state ([`Stack::set_carrier`]): loopback has no link, so
    /// while it is down a connection is closed as soon as it is accepted
    /// and outbound connections fail.
    carrier: Arc<AtomicBool>,
}

impl HostStack {
    /// An interface on loopback address `ip` (use [`host_address`]).
    pub fn new(ip: Ipv4Addr) -> Self {
        Self {
            ip,
            carrier: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// An accepted connection that fails once its interface loses carrier.
struct CarrierStream {
    inner: tokio::net::TcpStream,
    carrier: Arc<AtomicBool>,
}

impl CarrierStream {
    fn check(&self) -> io::Result<()> {
        if self.carrier.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the interface lost its link (Wi-Fi station dropped)",
            ))
        }
    }
}

impl tokio::io::AsyncRead for CarrierStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.check()?;
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CarrierStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.check()?;
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        self.check()?;
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct HostListener {
    inner: TcpListener,
    addr: SocketAddr,
    carrier: Arc<AtomicBool>,
}

impl Listener for HostListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        async move {
            loop {
                let (s, peer) = self.inner.accept().await?;
                if !self.carrier.load(Ordering::Acquire) {
                    // No link: the client gets a reset, the service nothing.
                    let _ = s.set_zero_linger();
                    drop(s);
                    continue;
                }
                s.set_nodelay(true)?;
                let s = CarrierStream {
                    inner: s,
                    carrier: self.carrier.clone(),
                };
                return Ok((Box::new(s) as BoxStream, peer));
            }
        }
        .boxed()
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

struct HostDatagram {
    inner: UdpSocket,
    addr: SocketAddr,
    carrier: Arc<AtomicBool>,
}

impl Datagram for HostDatagram {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        if !self.carrier.load(Ordering::Acquire) {
            // No link: the datagram goes nowhere.
            return std::future::ready(Ok(buf.len())).boxed();
        }
        self.inner.send_to(buf, to).boxed()
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        async move {
            loop {
                let got = self.inner.recv_from(buf).await?;
                // No link: what arrives meanwhile never reached the device.
                if self.carrier.load(Ordering::Acquire) {
                    return Ok(got);
                }
            }
        }
        .boxed()
    }

    fn join_multicast_v4(&self, group: Ipv4Addr) -> io::Result<()> {
        self.inner.join_multicast_v4(group, Ipv4Addr::LOCALHOST)
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Stack for HostStack {
    fn ipv4(&self) -> Ipv4Addr {
        self.ip
    }

    fn public_port(&self, port: u16) -> u16 {
        map_port(port)
    }

    fn listen_tcp(&self, port: u16) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        async move {
            let addr = SocketAddr::from((self.ip, map_port(port)));
            let sock = TcpSocket::new_v4()?;
            sock.set_reuseaddr(true)?;
            sock.bind(addr)?;
            let inner = sock.listen(1024)?;
            let addr = inner.local_addr()?;
            Ok(Box::new(HostListener {
                inner,
                addr,
                carrier: self.carrier.clone(),
            }) as Box<dyn Listener>)
        }
        .boxed()
    }

    fn bind_udp(&self, port: u16) -> BoxFuture<'_, io::Result<Box<dyn Datagram>>> {
        async move {
            let inner = UdpSocket::bind(SocketAddr::from((self.ip, map_port(port)))).await?;
            let addr = inner.local_addr()?;
            Ok(Box::new(HostDatagram {
                inner,
                addr,
                carrier: self.carrier.clone(),
            }) as Box<dyn Datagram>)
        }
        .boxed()
    }

    fn connect_tcp(&self, to: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        if !self.carrier() {
            return std::future::ready(Err(io::Error::new(
                io::ErrorKind::NetworkUnreachable,
                "the interface has no link (not associated)",
            )))
            .boxed();
        }
        connect_from(self.ip, to).boxed()
    }

    fn set_carrier(&self, up: bool) {
        self.carrier.store(up, Ordering::Release);
    }

    fn carrier(&self) -> bool {
        self.carrier.load(Ordering::Acquire)
    }

    fn connect_tcp_carrier(
        &self,
        to: SocketAddr,
        pick: u32,
    ) -> BoxFuture<'_, io::Result<BoxStream>> {
        connect_from(carrier_address(self.ip, pick), to).boxed()
    }
}

/// The host-mode carrier NAT pool of a cellular device on 127.77.S.N:
/// 127.78.S.2 to 127.78.S.251; `pick` chooses the address of a session.
pub fn carrier_address(ip: Ipv4Addr, pick: u32) -> Ipv4Addr {
    let [_, _, s, _] = ip.octets();
    Ipv4Addr::new(127, 78, s, 2 + (pick % 250) as u8)
}

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> io::Result<BoxStream> {
    // A site address (10.77.S.N) is reached on its host-mode loopback
    // address and port, so services connect to site addresses unchanged.
    let to = match to {
        SocketAddr::V4(v4) if !v4.ip().is_loopback() => {
            SocketAddr::from((host_address(*v4.ip()), map_port(v4.port())))
        }
        other => other,
    };
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((src, 0)))?;
    let s = sock.connect(to).await?;
    s.set_nodelay(true)?;
    Ok(Box::new(s) as BoxStream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn site_addresses_map_to_their_own_loopback_address() {
        assert_eq!(
            host_address(Ipv4Addr::new(10, 77, 0, 10)),
            Ipv4Addr::new(127, 77, 0, 10)
        );
        assert_eq!(
            host_address(Ipv4Addr::new(10, 77, 1, 11)),
            Ipv4Addr::new(127, 77, 1, 11)
        );
    }

    /// Without carrier (a Wi-Fi side with no association) nothing gets in
    /// or out: new connections are reset, accepted ones fail, outbound
    /// ones fail, datagrams vanish.
    #[tokio::test]
    async fn no_carrier_no_traffic() {
        let stack = HostStack::new(Ipv4Addr::new(127, 77, 209, 5));
        let client = HostStack::new(Ipv4Addr::new(127, 77, 209, 6));
        let mut l = stack.listen_tcp(0).await.unwrap();
        let addr = l.local_addr();
        let mut c = client.connect_tcp(addr).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        stack.set_carrier(false);
        assert!(!stack.carrier());
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        assert!(s.read_exact(&mut buf).await.is_err(), "read without link");
        assert!(
            stack.connect_tcp(addr).await.is_err(),
            "outbound without link"
        );
        // A new client is reset at once; the service never sees it.
        let mut c2 = client.connect_tcp(addr).await.unwrap();
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(300), l.accept()).await;
        assert!(accepted.is_err(), "accepted without link");
        let n = c2.read(&mut buf).await;
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let u = stack.bind_udp(0).await.unwrap();
        let peer = client.bind_udp(0).await.unwrap();
        peer.send_to(b"lost", u.local_addr()).await.unwrap();
        let got =
            tokio::time::timeout(std::time::Duration::from_millis(300), u.recv_from(&mut buf))
                .await;
        assert!(got.is_err(), "a datagram arrived without link: {got:?}");
        stack.set_carrier(true);
        peer.send_to(b"kept", u.local_addr()).await.unwrap();
        let (n, _) = u.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"kept", "a datagram arrived without link");
        let mut c3 = client.connect_tcp(addr).await.unwrap();
        let (mut s3, _) = l.accept().await.unwrap();
        c3.write_all(b"pong").await.unwrap();
        s3.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn listener_accepts_and_closing_it_refuses() {
        let stack = HostStack::new(Ipv4Addr::new(127, 77, 200, 1));
        let mut l = stack.listen_tcp(0).await.unwrap();
        let addr = l.local_addr();
        let client = HostStack::new(Ipv4Addr::new(127, 77, 200, 2));
        let mut c = client.connect_tcp(addr).await.unwrap();
        let (mut s, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::new(127, 77, 200, 2));
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(l);
        let err = client.connect_tcp(addr).await.err().expect("port closed");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn udp_round_trip() {
        let a = HostStack::new(Ipv4Addr::new(127, 77, 200, 3));
        let b = HostStack::new(Ipv4Addr::new(127, 77, 200, 4));
        let sa = a.bind_udp(0).await.unwrap();
        let sb = b.bind_udp(0).await.unwrap();
        sa.send_to(b"hello", sb.local_addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = sb.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, sa.local_addr());
    }
}
