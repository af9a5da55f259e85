//! The status screen printed on the serial console after boot (in the
//! manner of ESXi's DCUI, but output only), and the CPUID decoding behind
//! its facts. The kernel gathers the facts; this renders them.

use arrayvec::ArrayString;
use core::fmt::{self, Write};

/// Hardware virtualization the CPU offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtualization {
    /// AMD-V, with or without nested paging.
    Svm { npt: bool },
    /// Intel VT-x, with or without extended page tables.
    Vmx { ept: bool },
    None,
}

impl fmt::Display for Virtualization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Svm { npt: true } => f.write_str("AMD-V (SVM) with NPT"),
            Self::Svm { npt: false } => f.write_str("AMD-V (SVM) without NPT"),
            Self::Vmx { ept: true } => f.write_str("Intel VT-x (VMX) with EPT"),
            Self::Vmx { ept: false } => f.write_str("Intel VT-x (VMX) without EPT"),
            Self::None => f.write_str("none"),
        }
    }
}

/// CPUID output registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidRegs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;

/// Detects SVM (CPUID 8000_0001h ECX[2], NPT in 8000_000Ah EDX[0]) or VMX
/// (CPUID 1 ECX[5]). `read_msr` is called only when VMX is present, and
/// PROCBASED_CTLS2 only when the secondary controls may be enabled (the
/// MSR does not exist otherwise); EPT is its allowed-1 bit 1.
pub fn detect_virtualization(cpuid: impl Fn(u32) -> CpuidRegs, mut read_msr: impl FnMut(u32) -> u64) -> Virtualization {
    let max_extended = cpuid(0x8000_0000).eax;
    if max_extended >= 0x8000_0001 && cpuid(0x8000_0001).ecx & (1 << 2) != 0 {
        let npt = max_extended >= 0x8000_000a && cpuid(0x8000_000a).edx & 1 != 0;
        return Virtualization::Svm { npt };
    }
    if cpuid(0).eax >= 1 && cpuid(1).ecx & (1 << 5) != 0 {
        // High half: allowed-1 settings; bit 63 = "activate secondary controls".
        let secondary = read_msr(IA32_VMX_PROCBASED_CTLS) & (1 << 63) != 0;
        let ept = secondary && read_msr(IA32_VMX_PROCBASED_CTLS2) & (1 << 33) != 0;
        return Virtualization::Vmx { ept };
    }
    Virtualization::None
}

/// The processor brand string (CPUID 8000_0002h..8000_0004h), trimmed;
/// empty if the CPU has none.
pub fn brand_string(cpuid: impl Fn(u32) -> CpuidRegs) -> ArrayString<48> {
    let mut out = ArrayString::new();
    if cpuid(0x8000_0000).eax < 0x8000_0004 {
        return out;
    }
    let mut bytes = [0u8; 48];
    for (i, leaf) in (0x8000_0002..=0x8000_0004).enumerate() {
        let r = cpuid(leaf);
        for (j, reg) in [r.eax, r.ebx, r.ecx, r.edx].into_iter().enumerate() {
            bytes[i * 16 + j * 4..][..4].copy_from_slice(&reg.to_le_bytes());
        }
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(48);
    for &b in &bytes[..end] {
        out.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' });
    }
    // Some CPUs pad with spaces, even inside ("Intel(R)    Core..."):
    // trim and squeeze the runs.
    let mut squeezed = ArrayString::new();
    for word in out.split_ascii_whitespace() {
        if !squeezed.is_empty() {
            squeezed.push(' ');
        }
        squeezed.push_str(word);
    }
    squeezed
}

/// Everything the status screen shows.
#[derive(Clone, Debug)]
pub struct StatusFacts<'a> {
    pub product: &'a str,
    pub version: &'a str,
    pub cpus: usize,
    pub cpu_model: &'a str,
    pub memory_mib: u64,
    pub virtualization: Virtualization,
    /// What runs VMs: the backend the VMM chose, or why there is none.
    pub vm_backend: &'a str,
    pub boot_protocol: &'a str,
    pub pci_functions: usize,
    /// One line per network-class PCI function: driven NICs and those
    /// without a driver alike.
    pub network_adapters: &'a [alloc::string::String],
    /// The management address once networking is configured.
    pub management_network: Option<&'a str>,
}

/// Characters between the box's side borders.
/// Wide enough for any brand string (48 characters) after its label,
/// narrow enough for an 80-column terminal.
pub const INNER_WIDTH: usize = 76;
const LABEL_WIDTH: usize = 25;

/// Renders the screen as a fixed-width ASCII box (serial consoles have no
/// line-drawing characters to rely on). Over-long values are cut with `~`.
pub fn render(facts: &StatusFacts, out: &mut impl Write) -> fmt::Result {
    let model = if facts.cpu_model.is_empty() { "unknown model" } else { facts.cpu_model };
    rule(out)?;
    line(out, "", format_args!("{} {}", facts.product, facts.version), true)?;
    line(out, "", format_args!("Hypervisor host"), true)?;
    rule(out)?;
    line(out, "CPUs:", format_args!("{}", facts.cpus), false)?;
    line(out, "CPU model:", format_args!("{model}"), false)?;
    line(out, "Memory:", format_args!("{} MiB", facts.memory_mib), false)?;
    line(out, "Hardware virtualization:", format_args!("{}", facts.virtualization), false)?;
    line(out, "VM backend:", format_args!("{}", facts.vm_backend), false)?;
    line(out, "Boot protocol:", format_args!("{}", facts.boot_protocol), false)?;
    line(out, "PCI:", format_args!("{} functions", facts.pci_functions), false)?;
    if facts.network_adapters.is_empty() {
        line(out, "Network adapters:", format_args!("none"), false)?;
    }
    for (i, adapter) in facts.network_adapters.iter().enumerate() {
        // (A blank label keeps continuation lines in the value column.)
        line(out, if i == 0 { "Network adapters:" } else { " " }, format_args!("{adapter}"), false)?;
    }
    line(out, "", format_args!(""), false)?;
    let network = facts.management_network.unwrap_or("not configured");
    line(out, "Management network:", format_args!("{network}"), false)?;
    rule(out)
}

fn rule(out: &mut impl Write) -> fmt::Result {
    writeln!(out, "+{:-<INNER_WIDTH$}+", "")
}

/// Formatted text kept up to a line's width; `overflow` notes the rest.
struct Clipped {
    text: ArrayString<{ 4 * INNER_WIDTH }>,
    chars: usize,
    overflow: bool,
}

impl Write for Clipped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.chars < INNER_WIDTH && self.text.try_push(c).is_ok() {
                self.chars += 1;
            } else {
                self.overflow = true;
            }
        }
        Ok(())
    }
}

/// `| <label padded to LABEL_WIDTH><value> |`, or the value centred.
fn line(out: &mut impl Write, label: &str, value: fmt::Arguments, centred: bool) -> fmt::Result {
    debug_assert!(label.chars().count() < LABEL_WIDTH);
    // One space of margin on each side inside the borders.
    let room = INNER_WIDTH - 2 - if label.is_empty() { 0 } else { LABEL_WIDTH };
    let mut v = Clipped { text: ArrayString::new(), chars: 0, overflow: false };
    let _ = v.write_fmt(value);
    let shown: ArrayString<{ 4 * INNER_WIDTH }> = if v.chars > room || v.overflow {
        let mut cut = ArrayString::new();
        v.text.chars().take(room - 1).for_each(|c| cut.push(c));
        cut.push('~');
        cut
    } else {
        v.text
    };
    let width = shown.chars().count();
    let (left, right) = if centred { ((room - width) / 2, room - width - (room - width) / 2) } else { (0, room - width) };
    if label.is_empty() {
        writeln!(out, "| {:left$}{shown}{:right$} |", "", "")
    } else {
        writeln!(out, "| {label:<LABEL_WIDTH$}{shown}{:right$} |", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn facts() -> StatusFacts<'static> {
        StatusFacts {
            product: "Mantle",
            version: "0.1.0",
            cpus: 4,
            cpu_model: "AMD EPYC 7763 64-Core Processor",
            memory_mib: 999,
            virtualization: Virtualization::Svm { npt: true },
            vm_backend: "AMD-V, nested paging, 16 ASIDs",
            boot_protocol: "PVH",
            pci_functions: 9,
            network_adapters: &[],
            management_network: None,
        }
    }

    fn rendered(f: &StatusFacts) -> String {
        let mut s = String::new();
        render(f, &mut s).unwrap();
        s
    }

    #[test]
    fn every_line_is_the_same_width_and_boxed() {
        let s = rendered(&facts());
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines.len() >= 10);
        for l in &lines {
            assert_eq!(l.chars().count(), INNER_WIDTH + 2, "{l:?}");
            assert!(l.starts_with('|') || l.starts_with('+'), "{l:?}");
            assert!(l.ends_with('|') || l.ends_with('+'), "{l:?}");
        }
        assert!(lines[0].starts_with("+---") && lines.last().unwrap().starts_with("+---"));
    }

    #[test]
    fn shows_the_facts() {
        let s = rendered(&facts());
        assert!(s.contains("Mantle 0.1.0"));
        assert!(s.contains("| CPUs:                    4 "));
        assert!(s.contains("| CPU model:               AMD EPYC 7763 64-Core Processor "));
        assert!(s.contains("Memory:                  999 MiB"));
        assert!(s.contains("Hardware virtualization: AMD-V (SVM) with NPT"));
        assert!(s.contains("| VM backend:              AMD-V, nested paging, 16 ASIDs "));
        assert!(s.contains("Boot protocol:           PVH"));
        assert!(s.contains("PCI:                     9 functions"));
        assert!(s.contains("Management network:      not configured"));
        assert!(s.contains("| Network adapters:        none "));
        let adapters = [String::from("nic0 e1000e 52:54:00:12:34:56, link up"), String::from("0000:00:04.0 8086:100e: no driver")];
        let mut f = facts();
        f.network_adapters = &adapters;
        let s = rendered(&f);
        assert!(s.contains("| Network adapters:        nic0 e1000e 52:54:00:12:34:56, link up "));
        assert!(s.contains("|                          0000:00:04.0 8086:100e: no driver "));
        let mut f = facts();
        f.management_network = Some("192.168.1.5 (DHCP)");
        f.virtualization = Virtualization::None;
        f.cpu_model = "";
        let s = rendered(&f);
        assert!(s.contains("Management network:      192.168.1.5 (DHCP)"));
        assert!(s.contains("Hardware virtualization: none "));
        assert!(s.contains("CPU model:               unknown model "));
    }

    #[test]
    fn long_values_are_cut_to_fit() {
        let mut f = facts();
        let long = "X".repeat(200);
        f.cpu_model = &long;
        let s = rendered(&f);
        let cpu_line = s.lines().find(|l| l.contains("CPU model:")).unwrap();
        assert_eq!(cpu_line.chars().count(), INNER_WIDTH + 2);
        assert!(cpu_line.ends_with("XXX~ |"));
        // The longest brand string CPUID can give fits whole.
        let brand = "B".repeat(48);
        f.cpu_model = &brand;
        let s = rendered(&f);
        assert!(s.contains(&format!("{brand} ")) && !s.contains('~'), "{s}");
        f.cpu_model = "Ünïcödé CPU ™";
        let s = rendered(&f);
        assert!(s.lines().all(|l| l.chars().count() == INNER_WIDTH + 2));
    }

    fn cpu(leaves: &[(u32, CpuidRegs)]) -> impl Fn(u32) -> CpuidRegs + '_ {
        move |leaf| leaves.iter().find(|(l, _)| *l == leaf).map(|(_, r)| *r).unwrap_or_default()
    }

    fn regs(eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidRegs {
        CpuidRegs { eax, ebx, ecx, edx }
    }

    #[test]
    fn detects_svm_with_and_without_npt() {
        let no_msr = |_| panic!("no MSR reads on AMD");
        let amd = [(0x8000_0000, regs(0x8000_001f, 0, 0, 0)), (0x8000_0001, regs(0, 0, 1 << 2, 0)), (0x8000_000a, regs(1, 0, 0, 1))];
        assert_eq!(detect_virtualization(cpu(&amd), no_msr), Virtualization::Svm { npt: true });
        let mut no_npt = amd;
        no_npt[2].1.edx = 0;
        assert_eq!(detect_virtualization(cpu(&no_npt), no_msr), Virtualization::Svm { npt: false });
        // Leaf 8000_000Ah not reported: no NPT, whatever it would return.
        let mut short = amd;
        short[0].1.eax = 0x8000_0008;
        assert_eq!(detect_virtualization(cpu(&short), no_msr), Virtualization::Svm { npt: false });
    }

    #[test]
    fn detects_vmx_and_reads_ept_only_when_secondary_controls_exist() {
        let intel = [(0, regs(0x16, 0, 0, 0)), (1, regs(0, 0, 1 << 5, 0)), (0x8000_0000, regs(0x8000_0008, 0, 0, 0))];
        let mut reads = Vec::new();
        let v = detect_virtualization(cpu(&intel), |m| {
            reads.push(m);
            match m {
                IA32_VMX_PROCBASED_CTLS => 1 << 63,
                IA32_VMX_PROCBASED_CTLS2 => 1 << 33,
                _ => 0,
            }
        });
        assert_eq!(v, Virtualization::Vmx { ept: true });
        assert_eq!(reads, [IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2]);
        let mut reads = Vec::new();
        let v = detect_virtualization(cpu(&intel), |m| {
            reads.push(m);
            0
        });
        assert_eq!(v, Virtualization::Vmx { ept: false });
        assert_eq!(reads, [IA32_VMX_PROCBASED_CTLS], "CTLS2 must not be read without secondary controls");
    }

    #[test]
    fn detects_none() {
        let plain = [(0, regs(0xd, 0, 0, 0)), (1, regs(0, 0, 0, 0)), (0x8000_0000, regs(0x8000_0008, 0, 0, 0))];
        assert_eq!(detect_virtualization(cpu(&plain), |_| panic!("no VMX")), Virtualization::None);
        assert_eq!(Virtualization::None.to_string(), "none");
    }

    #[test]
    fn brand_string_is_decoded_and_tidied() {
        let text = b"  Intel(R) Core(TM)   i7-8700 CPU @ 3.20GHz\0\0\0\0\0";
        let word = |i: usize| u32::from_le_bytes(text[i * 4..i * 4 + 4].try_into().unwrap());
        let leaves = [
            (0x8000_0000, regs(0x8000_0008, 0, 0, 0)),
            (0x8000_0002, regs(word(0), word(1), word(2), word(3))),
            (0x8000_0003, regs(word(4), word(5), word(6), word(7))),
            (0x8000_0004, regs(word(8), word(9), word(10), word(11))),
        ];
        assert_eq!(brand_string(cpu(&leaves)).as_str(), "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz");
        let old = [(0x8000_0000, regs(0x8000_0001, 0, 0, 0))];
        assert_eq!(brand_string(cpu(&old)).as_str(), "");
    }
}
