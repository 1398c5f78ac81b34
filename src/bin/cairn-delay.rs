//! A TCP proxy that adds round-trip time: every byte is delivered half the round trip
//! after it was read, in each direction, so each request and its response wait one
//! round trip as over a long link (bandwidth is not limited: the bytes of a window
//! flow together, delayed). For the remote benchmarks and tests, where the kernel has
//! no `tc netem` (scripts/s3-server starts it with CAIRN_S3_RTT).
//!
//!   cairn-delay LISTEN_ADDR TARGET_ADDR RTT_MS
//!
//! Memory: per connection and direction, what is in flight (at most 16 MiB; the reader
//! waits beyond that, as a full window would).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes in flight per direction before the reader waits.
const IN_FLIGHT: usize = 16 << 20;

/// A chunk read and when to deliver it; `None` marks the end of the stream.
type Due = (Instant, Option<Vec<u8>>);

/// Chunks in flight, and their bytes.
struct Pipe {
    queue: Mutex<(VecDeque<Due>, usize)>,
    cv: Condvar,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: cairn-delay LISTEN_ADDR TARGET_ADDR RTT_MS");
        std::process::exit(2);
    }
    let rtt_ms: f64 = args[3].parse().unwrap_or_else(|_| {
        eprintln!("cairn-delay: {}: not a number of milliseconds", args[3]);
        std::process::exit(2);
    });
    let half = Duration::from_secs_f64(rtt_ms / 2000.0);
    let listener = TcpListener::bind(&args[1]).unwrap_or_else(|e| {
        eprintln!("cairn-delay: cannot listen on {}: {e}", args[1]);
        std::process::exit(1);
    });
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let target = args[2].clone();
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect(&target) else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (c2, s2) = (client.try_clone(), server.try_clone());
            let (Ok(c2), Ok(s2)) = (c2, s2) else { return };
            relay(client, s2, half);
            relay(server, c2, half);
        });
    }
}

/// Copy `from` to `to`, each chunk delivered `delay` after it was read.
fn relay(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let pipe = Arc::new(Pipe { queue: Mutex::new((VecDeque::new(), 0)), cv: Condvar::new() });
    let p = pipe.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            quick_ack(&from);
            let n = from.read(&mut buf).unwrap_or(0);
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
            while q.1 > IN_FLIGHT {
                q = p.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.1 += n;
            q.0.push_back((Instant::now() + delay, chunk));
            p.cv.notify_all();
            if n == 0 {
                return;
            }
        }
    });
    std::thread::spawn(move || loop {
        let (due, chunk) = {
            let mut q = pipe.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(front) = q.0.pop_front() {
                    q.1 -= front.1.as_ref().map_or(0, Vec::len);
                    pipe.cv.notify_all();
                    break front;
                }
                q = pipe.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        match chunk {
            Some(c) if to.write_all(&c).is_ok() => {}
            _ => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    });
}

/// Acknowledge what `s` receives at once rather than up to 40 ms later (Linux's delayed
/// ACK; the mode does not last, so it is set again before every read). A server that
/// does not set TCP_NODELAY (s3s-fs) holds the last part of each response back until
/// its earlier bytes are acknowledged (Nagle's algorithm): with delayed ACKs, that is
/// a stall of ~40 ms in one request of two, which no real link adds.
fn quick_ack(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and an int option of the right size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
