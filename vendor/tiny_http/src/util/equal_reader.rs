use std::io::Read;
use std::io::Result as IoResult;
use std::sync::Arc;

use crate::util::limits::{ConnState, Unread};

/// Largest unread remainder that a reader without a connection state skips on drop.
const DRAIN_WITHOUT_STATE: usize = 64 * 1024;

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// mito patch: dropping it no longer drains the rest of the body into a buffer sized by
/// the declared length (a `Content-Length` of 10^13 made that allocation abort the
/// process). With a connection state it records what is left, and the connection thread
/// skips or refuses it before the next request; without one it skips a bounded
/// remainder through a small fixed buffer.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    state: Option<Arc<ConnState>>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(reader: R, size: usize, state: Option<Arc<ConnState>>) -> EqualReader<R> {
        if let Some(state) = &state {
            state.set_unread(Unread::Bytes(size));
        }
        EqualReader {
            reader,
            size,
            state,
        }
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(len) => {
                self.size -= len;
                if let Some(state) = &self.state {
                    state.set_unread(if self.size == 0 {
                        Unread::Nothing
                    } else {
                        Unread::Bytes(self.size)
                    });
                }
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        if self.state.is_some() || self.size > DRAIN_WITHOUT_STATE {
            return;
        }
        let mut buf = [0u8; 4096];
        while self.size > 0 {
            let want = self.size.min(buf.len());
            match self.reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.size -= n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5, None);

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5, None);

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }
}
