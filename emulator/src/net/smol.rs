//! TAP-mode backend of the transport API: one smoltcp `Interface` per device
//! interface, driven by one tokio reactor task (DESIGN.md "Networking").
//!
//! Contract:
//! - Each [`SmolStack`] is an Ethernet interface with its own MAC, static
//!   IPv4 address, ARP, ICMP echo (`auto-icmp-echo-reply`), IPv4
//!   fragmentation/reassembly, MTU 1500 and its own random seed (sequence
//!   numbers, ephemeral ports). Frames come from and go to a switch port
//!   ([`super::switch::PortHandle`]).
//! - The reactor sleeps until smoltcp's `poll_delay`, a frame arrives, or a
//!   socket is used (read, write, close, accept, connect). Frames that
//!   arrive in a TAP read batch are processed on the reader's task instead
//!   ([`super::switch::batch`]), and an answer is sent by the task that
//!   writes it, so a request and its answer cross no reactor. While such
//!   inline work goes on, the reactor wakes at least every [`LATE`] and a
//!   timer set inline or by a write (delayed ACK, retransmission) may fire
//!   up to [`LATE`] late instead of waking the reactor at once.
//! - TCP listeners are pools: ingress is processed one frame at a time and
//!   after every frame each listener gets a fresh listening socket for every
//!   one that took a SYN, so a burst of SYNs all get in (up to [`BACKLOG`]
//!   connections waiting for `accept`). A client that connects and closes at
//!   once is handed to `accept` like any other (it reads EOF); one that
//!   resets while half-open goes back to listening. Nothing wedges the pool.
//! - A dropped stream closes with FIN and lingers in the socket set until the
//!   TCP state machine reaches CLOSED (or [`LINGER`] passes, then RST).
//! - Dropping a listener closes the port (new SYNs get RST).
//! - Dropping a UDP socket still sends what was queued on it (as a kernel
//!   socket does): it leaves the socket set once its queue is empty (or
//!   after [`UDP_LINGER`]), so a datagram sent just before a service stops
//!   (a WS-Discovery Bye) reaches the wire.
//! - [`Stack::watch_ipv4`] follows the address: a DHCP lease or its loss
//!   wakes the watchers.
//! - An unpowered interface ([`Stack::set_powered`]) drops every frame in
//!   and out: a device that is off answers neither ARP nor ping. An
//!   interface without carrier ([`Stack::set_carrier`]: a Wi-Fi side with
//!   no association) does the same while its device runs.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::switch::{self, Inbox, PortHandle, Runner};
use super::{BoxStream, Datagram, Listener, Stack};
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Connections that may wait for `accept` on one listener.
pub const BACKLOG: usize = 1024;
/// Listening sockets kept ready per listener.
const POOL_MIN: usize = 1;
/// How long a dropped stream may take to close before it is reset.
pub const LINGER: Duration = Duration::from_secs(60);
/// How long a dropped UDP socket may take to send what it queued.
pub const UDP_LINGER: Duration = Duration::from_secs(2);
/// Socket buffer sizes (per direction).
const TCP_BUF: usize = 8 * 1024;
const UDP_PACKETS: usize = 16;
const UDP_BUF: usize = 8 * 1024;
/// Ethernet MTU (frame without FCS).
pub const MTU: usize = 1514;
/// How late a timer may fire while the interface is busy (see the module
/// contract): smoltcp's delayed ACK is 10 ms, its shortest retransmission
/// timeout 1 s, a Linux peer's 200 ms.
pub const LATE: Duration = Duration::from_millis(20);

/// Frames queued between the switch and smoltcp.
#[derive(Default)]
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        switch::recycle(self.0);
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = switch::frame_zeroed(len);
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxToken(f), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps
    }
}

struct Pool {
    port: u16,
    listening: Vec<SocketHandle>,
    pending: VecDeque<SocketHandle>,
    waker: Option<Waker>,
}

struct State {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: QueueDevice,
    pools: HashMap<u64, Pool>,
    next_pool: u64,
    orphans: Vec<(SocketHandle, SmolInstant)>,
    /// Dropped UDP sockets that still have datagrams to send.
    udp_orphans: Vec<(SocketHandle, SmolInstant)>,
    rng: SmallRng,
    next_port: u16,
    /// The DHCPv4 client, when the address comes from a DHCP server.
    dhcp: Option<SocketHandle>,
}

struct Shared {
    /// Powered and with carrier: frames go in and out.
    powered: std::sync::atomic::AtomicBool,
    /// The device's power (see `powered`).
    power: std::sync::atomic::AtomicBool,
    /// The link's carrier (see `powered`).
    carrier: std::sync::atomic::AtomicBool,
    /// When the reactor wakes next on its own (µs since `start`).
    deadline: std::sync::atomic::AtomicU64,
    port: PortHandle,
    state: Mutex<State>,
    /// The switch port's queue; its notification wakes the reactor.
    inbox: Arc<Inbox>,
    /// Inline batches and writes so far: while it moves, the reactor wakes
    /// at least every [`LATE`] (see [`Shared::after_activity`]).
    activity: std::sync::atomic::AtomicU64,
    start: std::time::Instant,
    /// The interface's address (0.0.0.0 while a DHCP client has no lease).
    ip: std::sync::atomic::AtomicU32,
    /// The same address, for tasks that follow its changes.
    ip_watch: tokio::sync::watch::Sender<Ipv4Addr>,
}

impl Shared {
    /// Power or carrier changed: frames flow only with both; losing
    /// either drops every connection (silently: nothing is sent then).
    fn link_changed(&self) {
        use std::sync::atomic::Ordering;
        let up = self.power.load(Ordering::Acquire) && self.carrier.load(Ordering::Acquire);
        let was = self.powered.swap(up, Ordering::AcqRel);
        if was && !up {
            let mut st = self.lock();
            for (_, s) in st.sockets.iter_mut() {
                if let smoltcp::socket::Socket::Tcp(t) = s {
                    t.abort();
                }
            }
        }
        self.notify();
    }

    /// Wakes the reactor.
    fn notify(&self) {
        self.inbox.notify();
    }

    /// Whether the reactor must be woken for a timer at `at` (µs since
    /// `start`; `u64::MAX`: none) when it is armed for `armed`: only if it
    /// would fire more than [`LATE`] late.
    fn timer_needs_reactor(at: u64, armed: u64) -> bool {
        at.saturating_add(LATE.as_micros() as u64) < armed
    }

    /// After work done outside the reactor (an inline batch, a write) at
    /// `now`: counts it, and says whether the reactor must be woken for
    /// the interface's timers, which `poll_at` gives (looked for only if
    /// the reactor is armed more than [`LATE`] ahead). Counting first and
    /// the reactor storing its deadline before it reads the count (both
    /// SeqCst) means that either the reactor sees this activity and wakes
    /// within [`LATE`], or this sees the reactor's deadline.
    fn after_activity(
        &self,
        now: SmolInstant,
        poll_at: impl FnOnce() -> Option<SmolInstant>,
    ) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.activity.fetch_add(1, SeqCst);
        let armed = self.deadline.load(SeqCst);
        Shared::timer_needs_reactor(now.total_micros().max(0) as u64, armed) && {
            let at = poll_at().map_or(u64::MAX, |t| t.total_micros().max(0) as u64);
            Shared::timer_needs_reactor(at, armed)
        }
    }

    /// One round of the interface: takes the inbox's frames, processes
    /// them, runs smoltcp's egress and, with `want_at`, returns when it
    /// next needs a poll (None: only when something arrives, or not asked).
    /// The frames to send are left in `out`, to be sent once the lock is
    /// released.
    fn step(&self, now: SmolInstant, out: &mut Vec<Vec<u8>>, want_at: bool) -> Option<SmolInstant> {
        let mut st = self.lock();
        let powered = self.powered.load(std::sync::atomic::Ordering::Acquire);
        self.inbox.drain_into(&mut st.dev.rx);
        if !powered {
            // No power: frames fall on the floor, nothing is sent.
            for f in st.dev.rx.drain(..) {
                switch::recycle(f);
            }
        }
        st.poll(now);
        let address = st.address();
        if address != self.ip() {
            self.ip
                .store(u32::from(address), std::sync::atomic::Ordering::Release);
        }
        self.ip_watch.send_if_modified(|ip| {
            let changed = *ip != address;
            *ip = address;
            changed
        });
        std::mem::swap(out, &mut st.dev.tx);
        if !powered {
            out.clear();
        }
        if !want_at {
            return None;
        }
        let State { iface, sockets, .. } = &mut *st;
        iface.poll_at(now, sockets)
    }

    fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip.load(std::sync::atomic::Ordering::Acquire))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.start.elapsed().as_micros() as i64)
    }
}

fn tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUF]),
        tcp::SocketBuffer::new(vec![0; TCP_BUF]),
    );
    // No Nagle (Modbus requests are small and latency-bound); smoltcp's
    // default 10 ms delayed ACK lets the answer carry the ACK.
    s.set_nagle_enabled(false);
    s
}

impl State {
    /// Next ephemeral port: a random start, then sequential (49152-65535),
    /// skipping ports in use by TCP sockets.
    fn ephemeral_port(&mut self) -> u16 {
        if self.next_port == 0 {
            self.next_port = self.rng.random_range(49152..=65535);
        }
        loop {
            let p = self.next_port;
            self.next_port = if p == 65535 { 49152 } else { p + 1 };
            let used = self.sockets.iter().any(|(_, s)| {
                matches!(s, smoltcp::socket::Socket::Tcp(t)
                    if t.local_endpoint().is_some_and(|e| e.port == p))
            });
            if !used {
                return p;
            }
        }
    }

    /// Moves sockets that took a SYN to `pending` and tops every pool up.
    fn replenish(&mut self) {
        for pool in self.pools.values_mut() {
            let mut i = 0;
            while i < pool.listening.len() {
                let h = pool.listening[i];
                if self.sockets.get::<tcp::Socket>(h).state() != tcp::State::Listen {
                    pool.listening.swap_remove(i);
                    pool.pending.push_back(h);
                } else {
                    i += 1;
                }
            }
            while pool.listening.len() < POOL_MIN && pool.pending.len() < BACKLOG {
                let mut s = tcp_socket();
                if s.listen(pool.port).is_err() {
                    break;
                }
                pool.listening.push(self.sockets.add(s));
            }
        }
    }

    /// Applies what the DHCPv4 client learnt: a lease sets the address and
    /// the default route, its loss removes them.
    fn dhcp_events(&mut self) {
        let Some(h) = self.dhcp else { return };
        match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            None => {}
            Some(dhcpv4::Event::Configured(config)) => {
                self.iface.update_ip_addrs(|a| {
                    a.clear();
                    let _ = a.push(IpCidr::Ipv4(config.address));
                });
                match config.router {
                    Some(router) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(router);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|a| a.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
    }

    /// The interface's IPv4 address, if it has one.
    fn address(&self) -> Ipv4Addr {
        self.iface.ipv4_addr().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn poll(&mut self, now: SmolInstant) {
        self.iface.poll_maintenance(now);
        loop {
            match self
                .iface
                .poll_ingress_single(now, &mut self.dev, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    if !self.pools.is_empty() {
                        self.replenish();
                    }
                }
            }
        }
        self.replenish();
        self.dhcp_events();
        while self
            .iface
            .poll_egress(now, &mut self.dev, &mut self.sockets)
            == PollResult::SocketStateChanged
        {}
        // Orphans: closed sockets leave the set; stuck ones are reset.
        let sockets = &mut self.sockets;
        self.orphans.retain(|&(h, since)| {
            let s = sockets.get_mut::<tcp::Socket>(h);
            if s.state() == tcp::State::Closed {
                sockets.remove(h);
                false
            } else {
                if now - since > smoltcp::time::Duration::from_secs(LINGER.as_secs()) {
                    s.abort();
                }
                true
            }
        });
        self.udp_orphans.retain(|&(h, since)| {
            let s = sockets.get::<udp::Socket>(h);
            let done = s.send_queue() == 0
                || now - since
                    > smoltcp::time::Duration::from_millis(UDP_LINGER.as_millis() as u64);
            if done {
                sockets.remove(h);
            }
            !done
        });
        for pool in self.pools.values_mut() {
            if !pool.pending.is_empty()
                && let Some(w) = pool.waker.take()
            {
                w.wake();
            }
        }
    }
}

/// One device interface on the in-process switch.
#[derive(Clone)]
pub struct SmolStack {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SmolStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmolStack({})", self.shared.ip())
    }
}

/// A locally administered unicast MAC derived from `seed`.
pub fn mac_from_seed(seed: u64) -> [u8; 6] {
    let b = seed.to_be_bytes();
    [0x02, 0x77, b[4], b[5], b[6], b[7]]
}

impl SmolStack {
    /// Creates the interface `ip/prefix` (or, with `dhcp`, an interface that
    /// takes its address from a DHCPv4 server) with MAC `mac` on switch port
    /// `port`, whose frames arrive in `inbox`, and spawns its reactor (call
    /// inside a tokio runtime).
    pub fn spawn(
        ip: Ipv4Addr,
        dhcp: bool,
        prefix: u8,
        mac: [u8; 6],
        seed: u64,
        port: PortHandle,
        inbox: Arc<Inbox>,
    ) -> Self {
        let start = std::time::Instant::now();
        let mut dev = QueueDevice::default();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, SmolInstant::from_micros(0));
        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = dhcp.then(|| sockets.add(dhcpv4::Socket::new()));
        if dhcp.is_none() {
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), prefix));
            });
        }
        let ip = if dhcp.is_some() {
            Ipv4Addr::UNSPECIFIED
        } else {
            ip
        };
        let shared = Arc::new(Shared {
            powered: std::sync::atomic::AtomicBool::new(true),
            power: std::sync::atomic::AtomicBool::new(true),
            carrier: std::sync::atomic::AtomicBool::new(true),
            deadline: std::sync::atomic::AtomicU64::new(0),
            port,
            state: Mutex::new(State {
                iface,
                sockets,
                dev,
                pools: HashMap::new(),
                next_pool: 0,
                orphans: Vec::new(),
                udp_orphans: Vec::new(),
                rng: SmallRng::seed_from_u64(seed ^ 0x5eed),
                next_port: 0,
                dhcp,
            }),
            inbox: inbox.clone(),
            activity: std::sync::atomic::AtomicU64::new(0),
            start,
            ip: std::sync::atomic::AtomicU32::new(u32::from(ip)),
            ip_watch: tokio::sync::watch::Sender::new(ip),
        });
        let runner: Arc<dyn Runner> = shared.clone();
        inbox.set_runner(Arc::downgrade(&runner));
        tokio::spawn(reactor(shared.clone()));
        Self { shared }
    }

    /// Sends what is not on the interface's subnet to `gateway` (a static
    /// default route; a DHCP lease sets its own).
    pub fn set_default_gateway(&self, gateway: Ipv4Addr) {
        let mut st = self.shared.lock();
        let _ = st.iface.routes_mut().add_default_ipv4_route(gateway);
    }
}

impl Runner for Shared {
    /// Processes the inbox on the caller's task (the end of a TAP read
    /// batch); wakes the reactor only for a timer it would miss by more
    /// than [`LATE`].
    fn run(&self) {
        let now = self.now();
        let mut out = Vec::new();
        self.step(now, &mut out, false);
        for f in out {
            self.port.send(f);
        }
        let wake = self.after_activity(now, || {
            let mut st = self.lock();
            let State { iface, sockets, .. } = &mut *st;
            iface.poll_at(now, sockets)
        });
        if wake {
            self.notify();
        }
    }
}

async fn reactor(shared: Arc<Shared>) {
    let mut out = Vec::new();
    let mut activity_seen = 0;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    loop {
        let now = shared.now();
        let at = shared.step(now, &mut out, true);
        for f in out.drain(..) {
            shared.port.send(f);
        }
        let mut delay = at.map_or(Duration::from_secs(3600), |t| {
            Duration::from_micros((t.total_micros() - now.total_micros()).max(0) as u64)
        });
        let now_us = now.total_micros().max(0) as u64;
        let store = |d: Duration| {
            shared.deadline.store(
                now_us.saturating_add(d.as_micros() as u64),
                std::sync::atomic::Ordering::SeqCst,
            );
        };
        store(delay);
        // While there is work outside this task (inline batches, writes),
        // wake at least every LATE, so that work need not wake this task
        // for its timers (see `Shared::after_activity`).
        let seen = shared.activity.load(std::sync::atomic::Ordering::SeqCst);
        if seen != activity_seen {
            activity_seen = seen;
            if delay > LATE {
                delay = LATE;
                store(delay);
            }
        }
        sleep.as_mut().reset(tokio::time::Instant::now() + delay);
        let notified = shared.inbox.notified();
        tokio::select! {
            biased;
            _ = notified => {}
            _ = &mut sleep => {}
        }
    }
}

struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let s = st.sockets.get_mut::<tcp::Socket>(self.handle);
        if s.can_recv() {
            // Only a receive window that was nearly closed needs the reactor
            // to announce the space freed here.
            let was_full = s.recv_queue() * 2 >= s.recv_capacity();
            let dst = buf.initialize_unfilled();
            let n = s.recv_slice(dst).unwrap_or(0);
            buf.advance(n);
            drop(st);
            if was_full {
                self.shared.notify();
            }
            Poll::Ready(Ok(()))
        } else if !s.may_recv() {
            if s.state() == tcp::State::Closed && s.remote_endpoint().is_none() {
                // Reset by the peer or timed out before any FIN.
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Ok(()))
        } else {
            s.register_recv_waker(cx.waker());
            Poll::Pending
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        let s = st.sockets.get_mut::<tcp::Socket>(self.handle);
        if s.can_send() {
            let n = s.send_slice(data).unwrap_or(0);
            if !self
                .shared
                .powered
                .load(std::sync::atomic::Ordering::Acquire)
            {
                drop(st);
                self.shared.notify();
                return Poll::Ready(Ok(n));
            }
            // Send at once from this task (one hand-off less per answer);
            // wake the reactor only if a timer of this send (retransmit)
            // would fire more than LATE after its own next wake-up.
            let now = self.shared.now();
            let State {
                iface,
                sockets,
                dev,
                ..
            } = &mut *st;
            iface.poll_egress(now, dev, sockets);
            let out = std::mem::take(&mut dev.tx);
            let wake = self
                .shared
                .after_activity(now, || iface.poll_at(now, sockets));
            drop(st);
            for f in out {
                self.shared.port.send(f);
            }
            if wake {
                self.shared.notify();
            }
            Poll::Ready(Ok(n))
        } else if !s.may_send() {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection is closed",
            )))
        } else {
            s.register_send_waker(cx.waker());
            Poll::Pending
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared
            .lock()
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .close();
        self.shared.notify();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let now = self.shared.now();
        let mut st = self.shared.lock();
        st.sockets.get_mut::<tcp::Socket>(self.handle).close();
        st.orphans.push((self.handle, now));
        drop(st);
        self.shared.notify();
    }
}

struct SmolListener {
    shared: Arc<Shared>,
    id: u64,
    addr: SocketAddr,
}

fn endpoint_addr(e: Option<IpEndpoint>) -> SocketAddr {
    match e {
        Some(IpEndpoint {
            addr: IpAddress::Ipv4(ip),
            port,
        }) => SocketAddr::from((ip, port)),
        _ => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    }
}

impl Listener for SmolListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        async move {
            let handle =
                poll_fn(|cx| {
                    let mut st = self.shared.lock();
                    let State { pools, sockets, .. } = &mut *st;
                    let Some(pool) = pools.get_mut(&self.id) else {
                        return Poll::Ready(Err(io::Error::other("listener closed")));
                    };
                    while let Some(h) = pool.pending.pop_front() {
                        let s = sockets.get_mut::<tcp::Socket>(h);
                        match s.state() {
                            tcp::State::Listen => pool.listening.push(h),
                            tcp::State::Closed => {
                                sockets.remove(h);
                            }
                            tcp::State::SynReceived => {
                                pool.pending.push_front(h);
                                break;
                            }
                            _ => return Poll::Ready(Ok(h)),
                        }
                    }
                    // Half-open ones stay; look past them for an established one.
                    if let Some(i) = pool.pending.iter().position(|&h| {
                        sockets.get::<tcp::Socket>(h).state() != tcp::State::SynReceived
                    }) {
                        let h = pool.pending.remove(i).expect("index in range");
                        match sockets.get::<tcp::Socket>(h).state() {
                            tcp::State::Listen => pool.listening.push(h),
                            tcp::State::Closed => {
                                sockets.remove(h);
                            }
                            _ => return Poll::Ready(Ok(h)),
                        }
                    }
                    pool.waker = Some(cx.waker().clone());
                    Poll::Pending
                })
                .await?;
            let peer = endpoint_addr(
                self.shared
                    .lock()
                    .sockets
                    .get::<tcp::Socket>(handle)
                    .remote_endpoint(),
            );
            self.shared.notify();
            let stream = TcpStream {
                shared: self.shared.clone(),
                handle,
            };
            Ok((Box::new(stream) as BoxStream, peer))
        }
        .boxed()
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::from((self.shared.ip(), self.addr.port()))
    }
}

impl Drop for SmolListener {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(pool) = st.pools.remove(&self.id) {
            for h in pool.listening.into_iter().chain(pool.pending) {
                st.sockets.get_mut::<tcp::Socket>(h).abort();
                let now = self.shared.now();
                st.orphans.push((h, now));
            }
        }
        drop(st);
        self.shared.notify();
    }
}

struct SmolDatagram {
    shared: Arc<Shared>,
    handle: SocketHandle,
    addr: SocketAddr,
}

impl Datagram for SmolDatagram {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        async move {
            let SocketAddr::V4(to) = to else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "devices speak IPv4 only",
                ));
            };
            let n = poll_fn(|cx| {
                let mut st = self.shared.lock();
                let s = st.sockets.get_mut::<udp::Socket>(self.handle);
                if s.can_send() {
                    let ep = IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
                    Poll::Ready(
                        s.send_slice(buf, ep)
                            .map(|_| buf.len())
                            .map_err(|e| io::Error::other(format!("cannot send: {e}"))),
                    )
                } else {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
            })
            .await?;
            self.shared.notify();
            Ok(n)
        }
        .boxed()
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        async move {
            poll_fn(|cx| {
                let mut st = self.shared.lock();
                let s = st.sockets.get_mut::<udp::Socket>(self.handle);
                if s.can_recv() {
                    Poll::Ready(
                        s.recv_slice(buf)
                            .map(|(n, meta)| (n, endpoint_addr(Some(meta.endpoint))))
                            .map_err(|e| io::Error::other(format!("cannot receive: {e}"))),
                    )
                } else {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
            })
            .await
        }
        .boxed()
    }

    fn join_multicast_v4(&self, group: Ipv4Addr) -> io::Result<()> {
        // The interface accepts datagrams to the group from now on; the
        // socket is bound to its port on every address, so it receives them.
        self.shared
            .lock()
            .iface
            .join_multicast_group(smoltcp::wire::IpAddress::Ipv4(group))
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot join multicast group {group}: {e}"),
                )
            })?;
        self.shared.notify();
        Ok(())
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::from((self.shared.ip(), self.addr.port()))
    }

    fn flush(&self) -> BoxFuture<'_, io::Result<()>> {
        async move {
            poll_fn(|cx| {
                let mut st = self.shared.lock();
                let s = st.sockets.get_mut::<udp::Socket>(self.handle);
                if s.send_queue() == 0 {
                    Poll::Ready(Ok(()))
                } else {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
            })
            .await
        }
        .boxed()
    }
}

impl Drop for SmolDatagram {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.sockets.get::<udp::Socket>(self.handle).send_queue() == 0 {
            st.sockets.remove(self.handle);
            return;
        }
        // Datagrams still queued go out first (see the module contract).
        let now = self.shared.now();
        st.udp_orphans.push((self.handle, now));
        drop(st);
        self.shared.notify();
    }
}

impl Stack for SmolStack {
    fn ipv4(&self) -> Ipv4Addr {
        self.shared.ip()
    }

    fn mac(&self) -> Option<[u8; 6]> {
        match self.shared.lock().iface.hardware_addr() {
            HardwareAddress::Ethernet(EthernetAddress(mac)) => Some(mac),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    fn send_frame(&self, frame: Vec<u8>) -> io::Result<()> {
        if !self
            .shared
            .powered
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the interface has no power",
            ));
        }
        if !(14..=MTU).contains(&frame.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame is 14 to {MTU} bytes, not {}", frame.len()),
            ));
        }
        self.shared.port.send(frame);
        Ok(())
    }

    fn watch_ipv4(&self) -> tokio::sync::watch::Receiver<Ipv4Addr> {
        self.shared.ip_watch.subscribe()
    }

    fn set_powered(&self, on: bool) {
        self.shared
            .power
            .store(on, std::sync::atomic::Ordering::Release);
        self.shared.link_changed();
    }

    fn set_carrier(&self, up: bool) {
        self.shared
            .carrier
            .store(up, std::sync::atomic::Ordering::Release);
        self.shared.link_changed();
    }

    fn carrier(&self) -> bool {
        self.shared
            .carrier
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn listen_tcp(&self, port: u16) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        async move {
            if port == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the TAP backend needs an explicit port to listen on",
                ));
            }
            let mut st = self.shared.lock();
            if st.pools.values().any(|p| p.port == port) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("port {port} is already open on {}", self.shared.ip()),
                ));
            }
            let id = st.next_pool;
            st.next_pool += 1;
            st.pools.insert(
                id,
                Pool {
                    port,
                    listening: Vec::new(),
                    pending: VecDeque::new(),
                    waker: None,
                },
            );
            st.replenish();
            drop(st);
            self.shared.notify();
            Ok(Box::new(SmolListener {
                shared: self.shared.clone(),
                id,
                addr: SocketAddr::from((self.shared.ip(), port)),
            }) as Box<dyn Listener>)
        }
        .boxed()
    }

    fn bind_udp(&self, port: u16) -> BoxFuture<'_, io::Result<Box<dyn Datagram>>> {
        async move {
            let mut st = self.shared.lock();
            let port = if port == 0 { st.ephemeral_port() } else { port };
            let mut s = udp::Socket::new(
                udp::PacketBuffer::new(
                    vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                    vec![0; UDP_BUF],
                ),
                udp::PacketBuffer::new(
                    vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                    vec![0; UDP_BUF],
                ),
            );
            s.bind(port)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let handle = st.sockets.add(s);
            Ok(Box::new(SmolDatagram {
                shared: self.shared.clone(),
                handle,
                addr: SocketAddr::from((self.shared.ip(), port)),
            }) as Box<dyn Datagram>)
        }
        .boxed()
    }

    fn connect_tcp(&self, to: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        async move {
            let SocketAddr::V4(to) = to else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "devices speak IPv4 only",
                ));
            };
            let handle = {
                let mut st = self.shared.lock();
                let local = st.ephemeral_port();
                let mut s = tcp_socket();
                let State { iface, sockets, .. } = &mut *st;
                s.connect(
                    iface.context(),
                    IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port()),
                    local,
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                sockets.add(s)
            };
            self.shared.notify();
            // From here the stream owns the socket (dropping it closes it).
            let stream = TcpStream {
                shared: self.shared.clone(),
                handle,
            };
            let connected = poll_fn(|cx| {
                let mut st = self.shared.lock();
                let s = st.sockets.get_mut::<tcp::Socket>(handle);
                match s.state() {
                    tcp::State::SynSent | tcp::State::SynReceived => {
                        s.register_send_waker(cx.waker());
                        s.register_recv_waker(cx.waker());
                        Poll::Pending
                    }
                    tcp::State::Closed => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("{to} refused the connection"),
                    ))),
                    _ => Poll::Ready(Ok(())),
                }
            });
            match tokio::time::timeout(Duration::from_secs(20), connected).await {
                Ok(Ok(())) => Ok(Box::new(stream) as BoxStream),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {to} timed out"),
                )),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::switch::{PortKind, Segment};
    use crate::site::Bridge;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (SmolStack, SmolStack) {
        let seg = Arc::new(Segment::new_for_test("lan", Bridge::Internal));
        let mk = |n: u8| {
            let (port, rx) = seg.attach_inbox(
                PortKind::Device {
                    device: format!("d{n}"),
                    iface: "eth1".into(),
                },
                u64::from(n),
            );
            SmolStack::spawn(
                Ipv4Addr::new(10, 9, 0, n),
                false,
                24,
                mac_from_seed(u64::from(n)),
                u64::from(n),
                port,
                rx,
            )
        };
        (mk(1), mk(2))
    }

    async fn echo_server(stack: &SmolStack, port: u16) {
        let mut l = stack.listen_tcp(port).await.unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn burst_of_64_connects_all_get_in_and_echo() {
        let (server, client) = pair();
        echo_server(&server, 502).await;
        let to = SocketAddr::from((server.ipv4(), 502));
        let conns = futures::future::join_all((0..64).map(|_| client.connect_tcp(to))).await;
        let mut streams: Vec<BoxStream> = conns.into_iter().map(|c| c.unwrap()).collect();
        for (i, s) in streams.iter_mut().enumerate() {
            let msg = format!("hello {i}");
            s.write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, msg.as_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_do_not_wedge_the_listener_and_drop_sends_fin() {
        let (server, client) = pair();
        let mut l = server.listen_tcp(80).await.unwrap();
        let to = SocketAddr::from((server.ipv4(), 80));
        // Accepted streams are dropped at once: the client must see EOF (FIN).
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        for _ in 0..200 {
            let c = client.connect_tcp(to).await.unwrap();
            drop(c);
        }
        let mut c = client.connect_tcp(to).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("FIN within 10 s")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_port_refuses_and_udp_round_trips() {
        let (server, client) = pair();
        let to = SocketAddr::from((server.ipv4(), 81));
        let l = server.listen_tcp(81).await.unwrap();
        assert!(server.listen_tcp(81).await.is_err(), "port in use");
        drop(l);
        let err = client.connect_tcp(to).await.err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let a = server.bind_udp(5000).await.unwrap();
        let b = client.bind_udp(0).await.unwrap();
        b.send_to(b"hi", a.local_addr()).await.unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from, b.local_addr());
    }
}
