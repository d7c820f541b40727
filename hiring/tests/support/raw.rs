//! A raw NATS protocol client: it sends exactly the bytes it is given, so tests
//! can say what no well-behaved client library would.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One `MSG`/`HMSG` received.
#[derive(Debug)]
pub struct Frame {
    pub subject: Vec<u8>,
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
}

pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to `127.0.0.1:port` with headers on, and waits for the PONG.
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let info = raw.line(Duration::from_secs(5)).await.expect("INFO");
        assert!(info.starts_with(b"INFO "), "{info:?}");
        raw.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\nPING\r\n")
            .await;
        raw.drain(Duration::from_secs(5)).await;
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next `MSG`/`HMSG` within `wait`, answering PINGs on the way.
    pub async fn next_message(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.line(left).await?;
            let args: Vec<&[u8]> = line
                .split(|b| *b == b' ')
                .filter(|a| !a.is_empty())
                .collect();
            let number = |a: &[u8]| std::str::from_utf8(a).unwrap().parse::<usize>().unwrap();
            match args.first().copied() {
                Some(b"PING") => self.send(b"PONG\r\n").await,
                Some(b"MSG") => {
                    let len = number(args[args.len() - 1]);
                    let body = self.exactly(len + 2, left).await?;
                    return Some(Frame {
                        subject: args[1].to_vec(),
                        header: Vec::new(),
                        payload: body[..len].to_vec(),
                    });
                }
                Some(b"HMSG") => {
                    let header = number(args[args.len() - 2]);
                    let total = number(args[args.len() - 1]);
                    let body = self.exactly(total + 2, left).await?;
                    return Some(Frame {
                        subject: args[1].to_vec(),
                        header: body[..header].to_vec(),
                        payload: body[header..total].to_vec(),
                    });
                }
                Some(b"-ERR") => panic!("server error: {}", String::from_utf8_lossy(&line)),
                _ => {}
            }
        }
    }

    /// Sends a PING and reads until its PONG (or `wait` passes); returns the
    /// messages read on the way.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Frame> {
        self.send(b"PING\r\n").await;
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(line) = self.peek_line(left).await else {
                return frames;
            };
            if line.starts_with(b"PONG") {
                self.line(left).await;
                return frames;
            }
            if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") || line.starts_with(b"PING")
            {
                if let Some(frame) = self.next_message(left).await {
                    frames.push(frame);
                }
            } else {
                self.line(left).await;
            }
        }
    }

    async fn fill(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    async fn peek_line(&mut self, wait: Duration) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Some(self.buf[..end].to_vec());
            }
            if !self.fill(wait).await {
                return None;
            }
        }
    }

    async fn line(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let line = self.peek_line(wait).await?;
        self.buf.drain(..line.len() + 2);
        Some(line)
    }

    async fn exactly(&mut self, n: usize, wait: Duration) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill(wait).await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}
