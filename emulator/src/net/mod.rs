//! Transport API that every device service is written against, once, for
//! both network backends (DESIGN.md principle 3).
//!
//! Contract:
//! - A device owns one [`Stack`] per network interface. A service asks it for
//!   a TCP [`Listener`], a [`Datagram`] socket, or an outbound TCP connection,
//!   and only ever sees [`BoxStream`]s: `AsyncRead + AsyncWrite + Unpin + Send`.
//!   No kernel-only type appears in this API, so a smoltcp backend (listener
//!   pools on a TAP device) implements the same traits.
//! - Dropping a listener closes the port: new connections are refused.
//!   Dropping a stream closes it gracefully (FIN).
//! - [`Stack::watch_ipv4`] follows the interface's address (a DHCP lease
//!   in TAP mode); static addresses never change.
//! - [`Stack::set_carrier`] is the link state a Wi-Fi association drives
//!   (crate::wifi): down, the interface neither sends nor receives.
//! - [`Stack::public_port`] says which port a client really uses for a
//!   service port (the host backend may apply [`host::PORT_OFFSET`]).
//! - Backends: [`host`] (kernel sockets on 127.77.S.N) and [`smol`] (TAP
//!   mode: smoltcp per interface on the [`switch`] fabric, bridged to a
//!   [`tap`]; [`fault`] wraps switch ports, [`pcap`] captures segments;
//!   [`router`] routes large labs; [`nat`] is the carrier NAT cellular
//!   devices sit behind).

pub mod fault;
pub mod host;
pub mod nat;
pub mod pcap;
pub mod pending_arp;
pub mod router;
pub mod smol;
pub mod switch;
pub mod tap;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream (TCP in both backends).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed connected stream.
pub type BoxStream = Box<dyn Stream>;

/// A listening TCP port.
pub trait Listener: Send + 'static {
    /// Waits for the next client; returns its stream and address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
    /// The address clients connect to.
    fn local_addr(&self) -> SocketAddr;
}

/// A bound UDP socket.
pub trait Datagram: Send + Sync + 'static {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>>;
    fn recv_from<'a>(&'a self, buf: &'a mut [u8])
    -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
    fn join_multicast_v4(&self, group: Ipv4Addr) -> io::Result<()>;
    fn local_addr(&self) -> SocketAddr;
    /// Waits until every datagram sent so far has left the interface (a
    /// kernel socket hands them to the kernel at once: nothing to wait for).
    fn flush(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// One network interface of one device.
pub trait Stack: Send + Sync + 'static {
    /// The interface's IPv4 address as clients reach it (0.0.0.0 while a
    /// DHCP client has no lease).
    fn ipv4(&self) -> Ipv4Addr;
    /// Follows the interface's address: the receiver sees every change (a
    /// DHCP lease, its loss). A static address never changes; the default
    /// receiver's `changed()` then returns an error at once.
    fn watch_ipv4(&self) -> tokio::sync::watch::Receiver<Ipv4Addr> {
        tokio::sync::watch::channel(self.ipv4()).1
    }
    /// The port a client must use to reach service port `port`.
    fn public_port(&self, port: u16) -> u16 {
        port
    }
    /// Opens a listening TCP port on this interface.
    fn listen_tcp(&self, port: u16) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;
    /// Binds a UDP port on this interface.
    fn bind_udp(&self, port: u16) -> BoxFuture<'_, io::Result<Box<dyn Datagram>>>;
    /// Opens an outbound TCP connection from this interface.
    fn connect_tcp(&self, to: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>>;
    /// Opens an outbound TCP connection as a cellular device's session
    /// behind its carrier's NAT: the peer sees a source address from the
    /// carrier's pool, chosen by `pick` (a random number per session).
    /// Backends without a carrier NAT connect as [`Stack::connect_tcp`].
    fn connect_tcp_carrier(
        &self,
        to: SocketAddr,
        pick: u32,
    ) -> BoxFuture<'_, io::Result<BoxStream>> {
        let _ = pick;
        self.connect_tcp(to)
    }
    /// Whether the device is powered: an unpowered NIC neither answers nor
    /// sends anything (no ARP, no ping). The runtime calls this at power
    /// changes; kernel-socket backends have nothing to do.
    fn set_powered(&self, _on: bool) {}
    /// Whether the link carries traffic (a Wi-Fi interface: associated).
    /// While it is down nothing goes in or out of the interface and its
    /// connections are gone, as with a cable pulled; the services keep
    /// their ports. Interfaces start with the carrier up.
    fn set_carrier(&self, up: bool) {
        let _ = up;
    }
    /// The carrier (see [`Stack::set_carrier`]).
    fn carrier(&self) -> bool {
        true
    }
    /// The interface's MAC address (TAP mode; `None` for kernel sockets).
    fn mac(&self) -> Option<[u8; 6]> {
        None
    }
    /// Puts a raw Ethernet frame on the wire as it is (replay attacks).
    /// Only TAP-mode interfaces have a wire; the host backend refuses.
    fn send_frame(&self, frame: Vec<u8>) -> io::Result<()> {
        let _ = frame;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "raw Ethernet frames need TAP mode (in host mode an interface is a kernel socket on loopback)",
        ))
    }
}
