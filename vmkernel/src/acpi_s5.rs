//! Finding the S5 (soft-off) sleep type without an AML interpreter.
//!
//! Powering off through ACPI needs `SLP_TYPa` from the DSDT's `\_S5`
//! package. The `acpi` crate does not run AML without `alloc` on stable, so
//! the kernel finds `NameOp "_S5_" PackageOp` in the DSDT bytes and decodes
//! the first two integers of the package, the approach most small kernels
//! take. Firmware that computes `_S5` in a method is not supported.

const NAME_OP: u8 = 0x08;
const PACKAGE_OP: u8 = 0x12;
const BYTE_PREFIX: u8 = 0x0a;
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepType {
    pub slp_typ_a: u8,
    pub slp_typ_b: u8,
}

fn integer(aml: &[u8], at: &mut usize) -> Option<u8> {
    let op = *aml.get(*at)?;
    *at += 1;
    match op {
        ZERO_OP => Some(0),
        ONE_OP => Some(1),
        BYTE_PREFIX => {
            let v = *aml.get(*at)?;
            *at += 1;
            Some(v)
        }
        // WordPrefix: SLP_TYP is 3 bits, the low byte carries it.
        0x0b => {
            let v = *aml.get(*at)?;
            *at += 2;
            Some(v)
        }
        _ => None,
    }
}

/// Decodes `\_S5` from the AML body of a DSDT (or SSDT).
pub fn find_s5(aml: &[u8]) -> Option<SleepType> {
    let mut start = 0;
    while let Some(pos) = aml[start..].windows(4).position(|w| w == b"_S5_") {
        let p = start + pos;
        start = p + 1;
        let named = p >= 1 && (aml[p - 1] == NAME_OP || (p >= 2 && aml[p - 1] == b'\\' && aml[p - 2] == NAME_OP));
        if !named || aml.get(p + 4) != Some(&PACKAGE_OP) {
            continue;
        }
        let mut at = p + 5;
        let lead = *aml.get(at)?;
        at += 1 + (lead >> 6) as usize; // PkgLength
        at += 1; // NumElements
        let a = integer(aml, &mut at)?;
        let b = integer(aml, &mut at).unwrap_or(a);
        return Some(SleepType { slp_typ_a: a & 7, slp_typ_b: b & 7 });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_style_package() {
        // Name (_S5, Package (4) { Zero, Zero, Zero, Zero }) as in QEMU's DSDT.
        let aml = [0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 0, slp_typ_b: 0 }));
    }

    #[test]
    fn byte_prefixed_values_and_root_prefix() {
        let aml = [0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x0a, 0x04, 0x0a, 0x07, 0x0a, 0x05, 0x00, 0x00];
        // "\\" directly before the name is only a root prefix when NameOp precedes it.
        let mut fixed = vec![0x08, b'\\'];
        fixed.extend_from_slice(&aml[2..]);
        assert_eq!(find_s5(&fixed), Some(SleepType { slp_typ_a: 7, slp_typ_b: 5 }));
    }

    #[test]
    fn skips_references_that_are_not_definitions() {
        // A method body mentioning _S5_ first, then the real definition.
        let mut aml = vec![0x70, b'_', b'S', b'5', b'_', 0x60];
        aml.extend_from_slice(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x01, 0x0a, 0x03]);
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 1, slp_typ_b: 3 }));
        assert_eq!(find_s5(b"no sleep states here"), None);
    }
}
