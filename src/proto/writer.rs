//! Outgoing-side rules: fragmentation state of data messages (RFC 6455 §5.4)
//! and control frame constraints (§5.5).

use crate::proto::frame::{check_control, is_control, OP_CONTINUATION};

/// Tracks the fragmentation state of outgoing data messages (tcllib
/// semantics, but control frames may be interleaved, as §5.4 allows).
#[derive(Default, Debug, Clone)]
pub struct OutgoingState {
    /// Opcode of the data message in progress, if any.
    current: Option<u8>,
}

/// Why a send was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// A different data type while a fragmented message is in progress.
    TypeChanged,
    /// A control frame with final=0.
    FragmentedControl,
    /// A control payload longer than 125 bytes.
    ControlTooLong,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::TypeChanged => "Cannot change type of message under continuation!",
            SendError::FragmentedControl => "Control frames cannot be fragmented",
            SendError::ControlTooLong => "Control frame payload cannot exceed 125 bytes",
        })
    }
}

impl std::error::Error for SendError {}

impl OutgoingState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decide the wire opcode for a send of `opcode` with `fin`.
    ///
    /// Data opcodes (0-7) start or continue a message: the first fragment
    /// gets `opcode`, later fragments get 0 (continuation); a different data
    /// opcode while a message is in progress is `TypeChanged` (state
    /// unchanged). An explicit opcode 0 continues the current message; with
    /// no message in progress it is passed through as 0 (as tcllib does).
    /// Control opcodes (>= 8) never change the state.
    pub fn frame_opcode(
        &mut self,
        opcode: u8,
        fin: bool,
        payload_len: usize,
    ) -> Result<u8, SendError> {
        if is_control(opcode) {
            check_control(fin, opcode, payload_len as u64)?;
            return Ok(opcode);
        }
        let wire = match (self.current, opcode) {
            (_, OP_CONTINUATION) => OP_CONTINUATION,
            (Some(cur), op) if cur != op => return Err(SendError::TypeChanged),
            (Some(_), _) => OP_CONTINUATION,
            (None, op) => {
                self.current = Some(op);
                op
            }
        };
        if fin {
            self.current = None;
        }
        Ok(wire)
    }

    /// True while a fragmented data message is in progress.
    pub fn in_message(&self) -> bool {
        self.current.is_some()
    }

    /// Opcode of the data message in progress, if any.
    pub fn current_opcode(&self) -> Option<u8> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §5.4: unfragmented messages use the data opcode with FIN.
    #[test]
    fn single_frames() {
        let mut s = OutgoingState::new();
        assert_eq!(s.frame_opcode(1, true, 5), Ok(1));
        assert_eq!(s.frame_opcode(2, true, 500), Ok(2));
        assert!(!s.in_message());
    }

    /// RFC 6455 §5.4: first fragment carries the opcode, the rest are
    /// continuation frames; FIN ends the message.
    #[test]
    fn fragmented() {
        let mut s = OutgoingState::new();
        assert_eq!(s.frame_opcode(1, false, 3), Ok(1));
        assert!(s.in_message());
        assert_eq!(s.current_opcode(), Some(1));
        assert_eq!(s.frame_opcode(1, false, 3), Ok(0));
        assert_eq!(s.frame_opcode(0, false, 3), Ok(0));
        assert_eq!(s.frame_opcode(1, true, 3), Ok(0));
        assert!(!s.in_message());
        assert_eq!(s.frame_opcode(2, false, 3), Ok(2));
        assert_eq!(s.frame_opcode(0, true, 3), Ok(0));
        assert!(!s.in_message());
    }

    /// RFC 6455 §5.4: fragments of one message must share a type (tcllib's
    /// "Cannot change type of message under continuation!").
    #[test]
    fn type_change_refused() {
        let mut s = OutgoingState::new();
        assert_eq!(s.frame_opcode(1, false, 1), Ok(1));
        assert_eq!(s.frame_opcode(2, true, 1), Err(SendError::TypeChanged));
        assert_eq!(s.frame_opcode(2, false, 1), Err(SendError::TypeChanged));
        assert!(s.in_message());
        assert_eq!(s.frame_opcode(1, true, 1), Ok(0));
        assert_eq!(
            SendError::TypeChanged.to_string(),
            "Cannot change type of message under continuation!"
        );
        // Reserved non-control opcodes behave like data opcodes.
        assert_eq!(s.frame_opcode(3, false, 1), Ok(3));
        assert_eq!(s.frame_opcode(1, true, 1), Err(SendError::TypeChanged));
        assert_eq!(s.frame_opcode(3, true, 1), Ok(0));
    }

    /// RFC 6455 §5.4/§5.5: control frames may be interleaved, must not be
    /// fragmented and carry at most 125 bytes; they never change the state.
    #[test]
    fn control_frames() {
        let mut s = OutgoingState::new();
        assert_eq!(s.frame_opcode(2, false, 1), Ok(2));
        assert_eq!(s.frame_opcode(9, true, 125), Ok(9));
        assert_eq!(s.frame_opcode(10, true, 0), Ok(10));
        assert_eq!(
            s.frame_opcode(9, false, 1),
            Err(SendError::FragmentedControl)
        );
        assert_eq!(s.frame_opcode(9, true, 126), Err(SendError::ControlTooLong));
        assert_eq!(s.frame_opcode(8, true, 2), Ok(8));
        assert!(s.in_message());
        assert_eq!(s.frame_opcode(2, true, 1), Ok(0));
        assert_eq!(
            SendError::FragmentedControl.to_string(),
            "Control frames cannot be fragmented"
        );
        assert_eq!(
            SendError::ControlTooLong.to_string(),
            "Control frame payload cannot exceed 125 bytes"
        );
    }

    /// tcllib passes an explicit continuation with no message through as-is.
    #[test]
    fn bare_continuation_passthrough() {
        let mut s = OutgoingState::new();
        assert_eq!(s.frame_opcode(0, true, 1), Ok(0));
        assert!(!s.in_message());
        assert_eq!(s.frame_opcode(0, false, 1), Ok(0));
        assert!(!s.in_message());
    }
}
