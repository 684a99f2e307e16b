//! ZBXD framing: the 13-byte header (21 with the large flag) that wraps every Zabbix message,
//! with optional zlib compression (zabbix-reference.md §1).

use std::fmt;
use std::io::{self, Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// The four bytes every Zabbix message starts with.
pub const MAGIC: &[u8; 4] = b"ZBXD";
/// Must be set on every message.
pub const FLAG_PROTOCOL: u8 = 0x01;
/// The payload is a zlib stream; the reserved field holds the uncompressed length.
pub const FLAG_COMPRESS: u8 = 0x02;
/// Lengths are 64-bit (21-byte header).
pub const FLAG_LARGE: u8 = 0x04;
/// Length of the normal header.
pub const HEADER_LEN: usize = 13;
/// The largest uncompressed request the server's trapper accepts (1 GiB).
pub const MAX_REQUEST: usize = 1 << 30;
/// Default cap on a reply: replies to sender and active-check requests are small, so anything
/// past this is garbage or hostile and is refused before it is buffered.
pub const DEFAULT_MAX_REPLY: u64 = 16 * 1024 * 1024;

/// What can be wrong with a frame received from a peer.
#[derive(Debug)]
pub enum FrameError {
    /// Reading failed (including a read timeout, `WouldBlock`/`TimedOut`).
    Io(io::Error),
    /// The peer closed the connection before sending a single byte.
    Closed,
    /// The peer closed the connection in the middle of a frame.
    Truncated { expected: u64, got: u64 },
    /// The first bytes are not `ZBXD`.
    BadMagic([u8; 4]),
    /// The flags byte lacks the protocol bit or has unknown bits.
    BadFlags(u8),
    /// The announced length exceeds the cap.
    TooLarge { len: u64, max: u64 },
    /// The zlib payload is corrupt or inflates to a size other than announced.
    Decompress(String),
}

impl FrameError {
    /// True when the underlying error is a socket timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Io(e) if is_timeout(e))
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) if is_timeout(e) => write!(f, "timed out waiting for the reply"),
            FrameError::Io(e) => write!(f, "reading the reply failed: {e}"),
            FrameError::Closed => write!(f, "connection closed without a reply"),
            FrameError::Truncated { expected, got } => {
                write!(f, "truncated reply: {got} of {expected} bytes")
            }
            FrameError::BadMagic(m) => {
                write!(
                    f,
                    "reply does not start with ZBXD (got {:?})",
                    shown(&String::from_utf8_lossy(m))
                )
            }
            FrameError::BadFlags(b) => write!(f, "reply has invalid protocol flags 0x{b:02x}"),
            FrameError::TooLarge { len, max } => {
                write!(f, "reply of {len} bytes exceeds the {max}-byte limit")
            }
            FrameError::Decompress(e) => write!(f, "cannot decompress the reply: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl Classify for FrameError {
    fn failure(&self) -> Failure {
        match self {
            FrameError::Io(e) if is_timeout(e) => Failure::DeadlineExceeded,
            FrameError::Io(_)
            | FrameError::Closed
            | FrameError::Truncated { .. }
            | FrameError::BadMagic(_)
            | FrameError::BadFlags(_)
            | FrameError::TooLarge { .. }
            | FrameError::Decompress(_) => Failure::ZabbixRefused,
        }
    }
}

/// True for the error kinds a socket read/write timeout produces on Unix.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A buffer for one outgoing message: the header's bytes are reserved up front so the JSON is
/// serialised straight into its final place and never copied (an 11,000-value request is ~1 MB).
#[derive(Debug, Default)]
pub struct MessageBuf {
    buf: Vec<u8>,
}

impl MessageBuf {
    /// An empty message with room for `capacity` payload bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
        buf.extend_from_slice(&[0; HEADER_LEN]);
        Self { buf }
    }

    /// The payload written so far.
    pub fn payload(&self) -> &[u8] {
        &self.buf[HEADER_LEN..]
    }

    /// The payload as a writer (serde_json writes into it directly).
    pub fn payload_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Fill in the header and return the bytes to put on the wire, zlib-compressed if asked.
    pub fn seal(mut self, compress: bool) -> io::Result<Vec<u8>> {
        let len = self.buf.len() - HEADER_LEN;
        if len > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("request of {len} bytes exceeds the server's 1 GiB limit"),
            ));
        }
        if compress {
            let mut out = Vec::with_capacity(HEADER_LEN + len / 4);
            out.extend_from_slice(&[0; HEADER_LEN]);
            let mut enc = ZlibEncoder::new(out, Compression::fast());
            enc.write_all(self.payload())?;
            let mut out = enc.finish()?;
            let clen = out.len() - HEADER_LEN;
            write_header(&mut out, FLAG_PROTOCOL | FLAG_COMPRESS, clen, len);
            Ok(out)
        } else {
            write_header(&mut self.buf, FLAG_PROTOCOL, len, 0);
            Ok(self.buf)
        }
    }
}

fn write_header(buf: &mut [u8], flags: u8, len: usize, reserved: usize) {
    buf[..4].copy_from_slice(MAGIC);
    buf[4] = flags;
    // Both lengths are below MAX_REQUEST (1 GiB), so they fit the 32-bit fields.
    buf[5..9].copy_from_slice(&(len as u32).to_le_bytes());
    buf[9..13].copy_from_slice(&(reserved as u32).to_le_bytes());
}

/// The header of an uncompressed message of `len` payload bytes (at most [`MAX_REQUEST`]),
/// for a payload that is written after it as it is produced.
pub fn plain_header(len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    write_header(&mut h, FLAG_PROTOCOL, len, 0);
    h
}

/// Frame `payload` as one message (convenience for small messages and tests).
pub fn encode(payload: &[u8], compress: bool) -> io::Result<Vec<u8>> {
    let mut m = MessageBuf::with_capacity(payload.len());
    m.payload_mut().extend_from_slice(payload);
    m.seal(compress)
}

/// Read one framed message and return its (inflated) payload. Accepts the protocol, compress
/// and large flags; refuses anything announcing more than `max` bytes before reading it.
pub fn read_frame(r: &mut impl Read, max: u64) -> Result<Vec<u8>, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    let got = read_full(r, &mut head)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < 5 || head[..4] != MAGIC[..] {
        let mut magic = [0u8; 4];
        magic[..got.min(4)].copy_from_slice(&head[..got.min(4)]);
        if got >= 4 && head[..4] != MAGIC[..] {
            return Err(FrameError::BadMagic(magic));
        }
        return Err(FrameError::Truncated {
            expected: HEADER_LEN as u64,
            got: got as u64,
        });
    }
    let flags = head[4];
    if flags & FLAG_PROTOCOL == 0 || flags & !(FLAG_PROTOCOL | FLAG_COMPRESS | FLAG_LARGE) != 0 {
        return Err(FrameError::BadFlags(flags));
    }
    let (len, reserved) = if flags & FLAG_LARGE != 0 {
        let mut large = [0u8; 21];
        large[..HEADER_LEN].copy_from_slice(&head);
        let more = read_full(r, &mut large[HEADER_LEN..])?;
        if more < 8 {
            return Err(FrameError::Truncated {
                expected: 21,
                got: (HEADER_LEN + more) as u64,
            });
        }
        (le64(&large[5..13]), le64(&large[13..21]))
    } else {
        if got < HEADER_LEN {
            return Err(FrameError::Truncated {
                expected: HEADER_LEN as u64,
                got: got as u64,
            });
        }
        (u64::from(le32(&head[5..9])), u64::from(le32(&head[9..13])))
    };
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let compressed = flags & FLAG_COMPRESS != 0;
    if compressed && reserved > max {
        return Err(FrameError::TooLarge { len: reserved, max });
    }
    let mut payload = vec![0u8; len as usize];
    let n = read_full(r, &mut payload)?;
    if (n as u64) < len {
        return Err(FrameError::Truncated {
            expected: len,
            got: n as u64,
        });
    }
    if !compressed {
        return Ok(payload);
    }
    let mut out = Vec::with_capacity(reserved as usize);
    ZlibDecoder::new(&payload[..])
        .take(reserved + 1)
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Decompress(e.to_string()))?;
    if out.len() as u64 != reserved {
        return Err(FrameError::Decompress(format!(
            "inflated to {} bytes, header announced {reserved}",
            out.len()
        )));
    }
    Ok(out)
}

/// Read until `buf` is full or EOF; returns the count read. Interrupted reads are retried.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(n)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_reference_header() {
        let payload = vec![b'x'; 87];
        let f = encode(&payload, false).unwrap();
        assert_eq!(
            &f[..13],
            &[0x5A, 0x42, 0x58, 0x44, 0x01, 0x57, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&f[13..], &payload[..]);
    }

    #[test]
    fn round_trips_plain_and_compressed() {
        let payload = br#"{"response":"success","info":"processed: 1; failed: 0; total: 1; seconds spent: 0.000055"}"#;
        for compress in [false, true] {
            let f = encode(payload, compress).unwrap();
            assert_eq!(f[4], if compress { 0x03 } else { 0x01 });
            if compress {
                assert_eq!(le32(&f[9..13]) as usize, payload.len());
            }
            let back = read_frame(&mut &f[..], DEFAULT_MAX_REPLY).unwrap();
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn understands_the_large_flag() {
        let payload = b"{\"response\":\"success\"}";
        let mut f = Vec::from(&MAGIC[..]);
        f.push(FLAG_PROTOCOL | FLAG_LARGE);
        f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        f.extend_from_slice(payload);
        assert_eq!(read_frame(&mut &f[..], 1024).unwrap(), payload);
    }

    #[test]
    fn refuses_garbage_truncation_and_oversize() {
        let empty: &[u8] = b"";
        assert!(matches!(
            read_frame(&mut &empty[..], 100),
            Err(FrameError::Closed)
        ));
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert!(matches!(
            read_frame(&mut &http[..], 100),
            Err(FrameError::BadMagic(_))
        ));
        assert!(matches!(
            read_frame(&mut &b"ZBX"[..], 100),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            read_frame(&mut &b"ZBXD\x01\x05\x00"[..], 100),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            read_frame(&mut &b"ZBXD\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..], 100),
            Err(FrameError::BadFlags(0))
        ));
        assert!(matches!(
            read_frame(&mut &b"ZBXD\x09\x00\x00\x00\x00\x00\x00\x00\x00"[..], 100),
            Err(FrameError::BadFlags(9))
        ));
        let mut f = encode(b"abcdef", false).unwrap();
        f.truncate(16);
        assert!(matches!(
            read_frame(&mut &f[..], 100),
            Err(FrameError::Truncated {
                expected: 6,
                got: 3
            })
        ));
        // A header announcing 4 GiB is refused without trying to allocate it.
        let huge = b"ZBXD\x01\xff\xff\xff\xff\x00\x00\x00\x00";
        assert!(matches!(
            read_frame(&mut &huge[..], DEFAULT_MAX_REPLY),
            Err(FrameError::TooLarge { .. })
        ));
        // A zlib bomb: small on the wire, announcing more than the cap once inflated.
        let mut bomb = encode(&vec![0u8; 1 << 20], true).unwrap();
        assert!(matches!(
            read_frame(&mut &bomb[..], 1024),
            Err(FrameError::TooLarge { .. })
        ));
        // Lying about the inflated size is caught.
        bomb[9..13].copy_from_slice(&10u32.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &bomb[..], 1 << 21),
            Err(FrameError::Decompress(_))
        ));
        let mut corrupt = encode(b"hello hello hello", true).unwrap();
        let last = corrupt.len() - 3;
        corrupt[last] ^= 0xff;
        assert!(matches!(
            read_frame(&mut &corrupt[..], 1024),
            Err(FrameError::Decompress(_))
        ));
    }
}
