//! Streaming generated text to stdout as it comes, for `generate` and `chat`.

use std::io::{StdoutLock, Write};

use engine::error::{Error, Result};

/// Writes each piece to stdout and flushes it (unless quiet, for `--json`). A failed write stops generation: the
/// callback returns false and [`StreamOut::finish`] reports the error.
pub struct StreamOut {
    stdout: StdoutLock<'static>,
    quiet: bool,
    error: Option<std::io::Error>,
}

impl StreamOut {
    pub fn new(quiet: bool) -> StreamOut {
        StreamOut { stdout: std::io::stdout().lock(), quiet, error: None }
    }

    /// Show `piece`; false once nothing more can be shown.
    pub fn piece(&mut self, piece: &str) -> bool {
        if self.quiet || piece.is_empty() {
            return true;
        }
        match self.stdout.write_all(piece.as_bytes()).and_then(|_| self.stdout.flush()) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// The write error that stopped the stream, if any.
    pub fn finish(self) -> Result<()> {
        self.error.map_or(Ok(()), |e| Err(Error::io("<stdout>", e)))
    }
}
