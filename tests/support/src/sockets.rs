//! Loopback sockets the tests use beside the network: a UDP receive that
//! waits out signals, a TCP port where nothing listens, endpoints of their
//! own for the firewall probes.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The next datagram on `sock` within `wait`, and who sent it; `None` when
/// none came. A signal can cut a timed receive short (EINTR even under
/// SA_RESTART, signal(7)): that is waited out, never taken for "nothing came".
pub fn recv_datagram(
    sock: &std::net::UdpSocket,
    wait: std::time::Duration,
) -> Option<(Vec<u8>, std::net::SocketAddr)> {
    use std::io::ErrorKind;
    let deadline = std::time::Instant::now() + wait;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left))
            .expect("set a read timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                return Some((buf, from));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("receiving a datagram on {:?}: {e}", sock.local_addr()),
        }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let port = l.local_addr().expect("local address").port();
    drop(l);
    port
}

/// A loopback address of its own for each endpoint (127.100-199.x.y), so no
/// other socket of this or another test shares its ports.
pub fn fresh_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Ipv4Addr::new(
        127,
        100 + (pid % 100) as u8,
        (n / 250 % 256) as u8,
        (n % 250 + 2) as u8,
    )
}

/// An endpoint that accepts connections while the listener lives.
pub fn open_endpoint() -> (TcpListener, Ipv4Addr, u16) {
    let ip = fresh_ip();
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    let port = l.local_addr().expect("local address").port();
    (l, ip, port)
}
