//! Loopback sockets the tests use beside the network: a UDP receive that
//! waits out signals, and a TCP port where nothing listens.

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
