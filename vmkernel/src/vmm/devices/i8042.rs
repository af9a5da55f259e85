//! Intel 8042 keyboard controller (data port 0x60, status/command 0x64),
//! just enough for guests that reset through it and drivers that probe it:
//! command 0xFE (and any pulse of output-port bit 0) resets the VM, the
//! self-test and command-byte handshakes answer, a keyboard with no keys
//! acknowledges its commands.

use alloc::collections::VecDeque;

pub const PORT_DATA: u16 = 0x60;
pub const PORT_STATUS: u16 = 0x64;

pub const STATUS_OBF: u8 = 1 << 0;
pub const STATUS_SYS: u8 = 1 << 2;
pub const STATUS_CMD: u8 = 1 << 3;
/// Keyboard not inhibited (the keylock switch is open): Linux warns
/// "Keylock active" without it.
pub const STATUS_UNLOCKED: u8 = 1 << 4;
pub const STATUS_AUX_OBF: u8 = 1 << 5;

/// What a write asks of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8042Effect {
    ResetVm,
}

#[derive(Clone, Debug)]
pub struct I8042 {
    command_byte: u8,
    /// Controller command waiting for its data byte (0x60, 0xd1, ...).
    pending: Option<u8>,
    out: VecDeque<u8>,
    last_was_command: bool,
    /// Output port (bit 0 = reset line, active low; bit 1 = A20).
    output_port: u8,
}

impl Default for I8042 {
    fn default() -> Self {
        I8042 { command_byte: 0x61, pending: None, out: VecDeque::new(), last_was_command: false, output_port: 0x03 }
    }
}

impl I8042 {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keyboard IRQ 1 level: output buffer full and interrupt enabled.
    pub fn irq_level(&self) -> bool {
        !self.out.is_empty() && self.command_byte & 1 != 0
    }

    pub fn a20(&self) -> bool {
        self.output_port & 2 != 0
    }

    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            PORT_DATA => self.out.pop_front().unwrap_or(0),
            PORT_STATUS => {
                // System flag set (self-test passed); input buffer never full.
                (!self.out.is_empty() as u8) | STATUS_SYS | STATUS_UNLOCKED | (self.last_was_command as u8) << 3
            }
            _ => 0xff,
        }
    }

    pub fn write(&mut self, port: u16, v: u8) -> Option<I8042Effect> {
        match port {
            PORT_STATUS => {
                self.last_was_command = true;
                self.command(v)
            }
            PORT_DATA => {
                self.last_was_command = false;
                match self.pending.take() {
                    Some(0x60) => self.command_byte = v,
                    Some(0xd1) => {
                        self.output_port = v;
                        if v & 1 == 0 {
                            return Some(I8042Effect::ResetVm);
                        }
                    }
                    Some(0xd2) | Some(0xd3) => self.out.push_back(v), // echo as kbd/aux input
                    Some(0xd4) => self.out.push_back(0xfe),           // no mouse: resend
                    _ => {
                        // Keyboard command: ACK; reset also reports BAT OK.
                        self.out.push_back(0xfa);
                        if v == 0xff {
                            self.out.push_back(0xaa);
                        }
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn command(&mut self, c: u8) -> Option<I8042Effect> {
        match c {
            0x20 => self.out.push_back(self.command_byte),
            0x60 | 0xd1..=0xd4 => self.pending = Some(c),
            0xa7 => self.command_byte |= 0x20,
            0xa8 => self.command_byte &= !0x20,
            0xa9 => self.out.push_back(0x00), // aux interface test OK
            0xaa => self.out.push_back(0x55), // controller self-test OK
            0xab => self.out.push_back(0x00), // keyboard interface test OK
            0xad => self.command_byte |= 0x10,
            0xae => self.command_byte &= !0x10,
            0xd0 => self.out.push_back(self.output_port),
            // Pulse output lines: bit 0 clear pulses the CPU reset line.
            0xf0..=0xff if c & 1 == 0 => return Some(I8042Effect::ResetVm),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulse_reset_command() {
        let mut k = I8042::new();
        assert_eq!(k.write(PORT_STATUS, 0xfe), Some(I8042Effect::ResetVm));
        assert_eq!(k.write(PORT_STATUS, 0xff), None, "0xff pulses nothing");
    }

    #[test]
    fn output_port_reset_and_a20() {
        let mut k = I8042::new();
        assert!(k.a20());
        k.write(PORT_STATUS, 0xd1);
        assert_eq!(k.write(PORT_DATA, 0x01), None);
        assert!(!k.a20());
        k.write(PORT_STATUS, 0xd1);
        assert_eq!(k.write(PORT_DATA, 0x02), Some(I8042Effect::ResetVm));
    }

    #[test]
    fn status_and_self_test() {
        let mut k = I8042::new();
        assert_eq!(k.read(PORT_STATUS), STATUS_SYS | STATUS_UNLOCKED, "self-test passed, keyboard not inhibited");
        k.write(PORT_STATUS, 0xaa);
        assert_eq!(k.read(PORT_STATUS) & STATUS_OBF, STATUS_OBF);
        assert_eq!(k.read(PORT_DATA), 0x55);
        assert_eq!(k.read(PORT_STATUS) & STATUS_OBF, 0);
        k.write(PORT_STATUS, 0x60);
        k.write(PORT_DATA, 0x47);
        k.write(PORT_STATUS, 0x20);
        assert_eq!(k.read(PORT_DATA), 0x47);
        // Keyboard reset: ACK then BAT OK, IRQ 1 while the buffer is full.
        k.write(PORT_DATA, 0xff);
        assert!(k.irq_level());
        assert_eq!((k.read(PORT_DATA), k.read(PORT_DATA)), (0xfa, 0xaa));
        assert!(!k.irq_level());
    }
}
