//! Interface configuration: `/etc/mantle/network.conf` and the kernel command line's `ip=`.
//!
//! # `/etc/mantle/network.conf`
//!
//! One `key=value` per line; blank lines and lines starting with `#` are ignored, as is
//! whitespace around keys and values. Keys:
//!
//! | key | value | |
//! | --- | --- | --- |
//! | `mode` | `dhcp` or `static` | required |
//! | `address` | `A.B.C.D/PREFIX` (e.g. `192.168.1.10/24`) | required for `static`, refused for `dhcp` |
//! | `gateway` | `A.B.C.D` | optional, `static` only; must lie in the address's subnet |
//! | `dns` | `A.B.C.D`, comma-separated or repeated lines (at most [`MAX_DNS`]) | optional; with `dhcp` they are used in addition to the server's |
//!
//! ```text
//! # vmk0 management interface
//! mode=static
//! address=192.168.1.10/24
//! gateway=192.168.1.1
//! dns=192.168.1.1,9.9.9.9
//! ```
//!
//! [`NetConfig::to_conf_text`] writes the same format back (for `vmkcli net set`).
//!
//! # Kernel command line `ip=`
//!
//! The Linux nfsroot form: `ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>`,
//! trailing fields optional, e.g. `ip=10.0.0.2::10.0.0.1:255.255.255.0::vmk0:off`;
//! `ip=dhcp` (also `on`, `any`, `both`, `bootp`) selects DHCP; `ip=off`/`ip=none` leaves the
//! configuration to `network.conf`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::Ipv4Addr;

/// At most this many DNS servers are recorded.
pub const MAX_DNS: usize = 3;

/// How an interface gets its IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressMode {
    /// DHCPv4 (smoltcp's DHCP client socket).
    Dhcp,
    /// A fixed address.
    Static {
        /// The interface address.
        address: Ipv4Addr,
        /// The prefix length of its subnet (0..=32).
        prefix_len: u8,
        /// The default gateway, if any.
        gateway: Option<Ipv4Addr>,
    },
}

/// The configuration of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// DHCP or static.
    pub mode: AddressMode,
    /// DNS servers configured here (DHCP adds the server's own).
    pub dns: Vec<Ipv4Addr>,
}

impl Default for NetConfig {
    /// DHCP, Mantle's default for vmk0.
    fn default() -> Self {
        NetConfig { mode: AddressMode::Dhcp, dns: Vec::new() }
    }
}

/// What was wrong with a configuration text, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line number in `network.conf`; 0 for the command line.
    pub line: usize,
    /// What is wrong, for the log and `vmkcli`.
    pub message: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

fn err(line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError { line, message: message.into() }
}

/// Parses a dotted-quad IPv4 address.
pub fn parse_ipv4(text: &str) -> Option<Ipv4Addr> {
    text.trim().parse().ok()
}

/// Converts a dotted netmask (`255.255.255.0`) into a prefix length, refusing
/// non-contiguous masks.
pub fn netmask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) == 0 { u8::try_from(ones).ok() } else { None }
}

/// The netmask of a prefix length (`24` → `255.255.255.0`).
pub fn prefix_to_netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = if prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix_len.min(32))) };
    Ipv4Addr::from(bits)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::from(prefix_to_netmask(prefix_len));
    u32::from(a) & mask == u32::from(b) & mask
}

fn check_static(line: usize, address: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr>) -> Result<(), ConfigError> {
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return Err(err(line, format!("{address} is not a usable interface address")));
    }
    if !(1..=32).contains(&prefix_len) {
        return Err(err(line, format!("prefix length {prefix_len} is not in 1..=32")));
    }
    if let Some(gw) = gateway
        && (!same_subnet(address, gw, prefix_len) || gw == address)
    {
        return Err(err(line, format!("gateway {gw} is not another host in {address}/{prefix_len}")));
    }
    Ok(())
}

fn parse_cidr(line: usize, value: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let (addr, prefix) = value
        .split_once('/')
        .ok_or_else(|| err(line, format!("address '{value}' needs a prefix length, as in 192.168.1.10/24")))?;
    let addr = parse_ipv4(addr).ok_or_else(|| err(line, format!("'{addr}' is not an IPv4 address")))?;
    let prefix: u8 = prefix.trim().parse().map_err(|_| err(line, format!("'{prefix}' is not a prefix length")))?;
    Ok((addr, prefix))
}

impl NetConfig {
    /// Parses the text of `/etc/mantle/network.conf`.
    pub fn parse_conf(text: &str) -> Result<NetConfig, ConfigError> {
        let mut mode: Option<(usize, bool)> = None; // (line, is_static)
        let mut address: Option<(usize, Ipv4Addr, u8)> = None;
        let mut gateway: Option<(usize, Ipv4Addr)> = None;
        let mut dns = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let (key, value) = content
                .split_once('=')
                .ok_or_else(|| err(line, format!("expected key=value, found '{content}'")))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "mode" => {
                    if mode.is_some() {
                        return Err(err(line, "mode given twice"));
                    }
                    mode = Some(match value {
                        "dhcp" => (line, false),
                        "static" => (line, true),
                        _ => return Err(err(line, format!("mode must be dhcp or static, not '{value}'"))),
                    });
                }
                "address" => {
                    if address.is_some() {
                        return Err(err(line, "address given twice"));
                    }
                    let (a, p) = parse_cidr(line, value)?;
                    address = Some((line, a, p));
                }
                "gateway" => {
                    if gateway.is_some() {
                        return Err(err(line, "gateway given twice"));
                    }
                    let gw = parse_ipv4(value).ok_or_else(|| err(line, format!("'{value}' is not an IPv4 address")))?;
                    gateway = Some((line, gw));
                }
                "dns" => {
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let server =
                            parse_ipv4(part).ok_or_else(|| err(line, format!("'{part}' is not an IPv4 address")))?;
                        if dns.len() == MAX_DNS {
                            return Err(err(line, format!("at most {MAX_DNS} DNS servers")));
                        }
                        dns.push(server);
                    }
                }
                _ => return Err(err(line, format!("unknown key '{key}' (known: mode, address, gateway, dns)"))),
            }
        }
        let (mode_line, is_static) = mode.ok_or_else(|| err(0, "mode= (dhcp or static) is missing"))?;
        let mode = if is_static {
            let (line, address, prefix_len) =
                address.ok_or_else(|| err(mode_line, "mode=static needs address=A.B.C.D/PREFIX"))?;
            let gw = gateway.map(|(_, g)| g);
            check_static(gateway.map_or(line, |(l, _)| l), address, prefix_len, gw)?;
            AddressMode::Static { address, prefix_len, gateway: gw }
        } else {
            if let Some((line, ..)) = address {
                return Err(err(line, "address= is only for mode=static"));
            }
            if let Some((line, _)) = gateway {
                return Err(err(line, "gateway= is only for mode=static"));
            }
            AddressMode::Dhcp
        };
        Ok(NetConfig { mode, dns })
    }

    /// Writes the configuration in `network.conf` form; [`NetConfig::parse_conf`] reads it back.
    pub fn to_conf_text(&self) -> String {
        let mut out = String::from("# Mantle network configuration (vmk0); see vmk-net's config module\n");
        match &self.mode {
            AddressMode::Dhcp => out.push_str("mode=dhcp\n"),
            AddressMode::Static { address, prefix_len, gateway } => {
                let _ = writeln!(out, "mode=static\naddress={address}/{prefix_len}");
                if let Some(gw) = gateway {
                    let _ = writeln!(out, "gateway={gw}");
                }
            }
        }
        if !self.dns.is_empty() {
            let list: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(out, "dns={}", list.join(","));
        }
        out
    }
}

/// The result of a kernel command line `ip=` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpParam {
    /// The configuration, or `None` for `ip=off`/`ip=none` (use `network.conf`).
    pub config: Option<NetConfig>,
    /// The device named in the sixth field, if any (`vmk0`, `eth0`, ...).
    pub device: Option<String>,
    /// The host name in the fifth field, if any.
    pub hostname: Option<String>,
}

/// Finds `ip=` in a kernel command line and parses it; `Ok(None)` if there is none.
pub fn parse_cmdline(cmdline: &str) -> Result<Option<IpParam>, ConfigError> {
    match cmdline.split_ascii_whitespace().filter_map(|w| w.strip_prefix("ip=")).next_back() {
        Some(value) => parse_ip_param(value).map(Some),
        None => Ok(None),
    }
}

/// Parses the value of `ip=` (without the `ip=`).
pub fn parse_ip_param(value: &str) -> Result<IpParam, ConfigError> {
    const DHCP: [&str; 5] = ["dhcp", "on", "any", "both", "bootp"];
    const OFF: [&str; 3] = ["off", "none", ""];
    if !value.contains(':') {
        return if DHCP.contains(&value) {
            Ok(IpParam { config: Some(NetConfig::default()), device: None, hostname: None })
        } else if OFF.contains(&value) {
            Ok(IpParam { config: None, device: None, hostname: None })
        } else {
            Err(err(0, format!("ip={value}: expected dhcp, off or client::gw:netmask::dev:off")))
        };
    }
    let fields: Vec<&str> = value.split(':').collect();
    if fields.len() > 9 {
        return Err(err(0, format!("ip={value}: more than 9 fields")));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("").trim();
    let addr = |i: usize, what: &str| -> Result<Option<Ipv4Addr>, ConfigError> {
        let f = field(i);
        if f.is_empty() {
            return Ok(None);
        }
        parse_ipv4(f).map(Some).ok_or_else(|| err(0, format!("ip=: {what} '{f}' is not an IPv4 address")))
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let device = non_empty(field(5));
    let hostname = non_empty(field(4));
    let mut dns = Vec::new();
    for i in [7, 8] {
        if let Some(d) = addr(i, "DNS server")? {
            dns.push(d);
        }
    }
    let autoconf = field(6);
    let client = addr(0, "client address")?;
    let config = if DHCP.contains(&autoconf) || (autoconf.is_empty() && client.is_none()) {
        NetConfig { mode: AddressMode::Dhcp, dns }
    } else if OFF.contains(&autoconf) {
        let address = client.ok_or_else(|| err(0, "ip=: static configuration needs a client address"))?;
        let prefix_len = match addr(3, "netmask")? {
            Some(mask) => netmask_to_prefix(mask).ok_or_else(|| err(0, format!("ip=: netmask {mask} is not contiguous")))?,
            None => classful_prefix(address),
        };
        let gateway = addr(2, "gateway")?;
        check_static(0, address, prefix_len, gateway).map_err(|e| err(0, format!("ip=: {}", e.message)))?;
        NetConfig { mode: AddressMode::Static { address, prefix_len, gateway }, dns }
    } else {
        return Err(err(0, format!("ip=: autoconf '{autoconf}' is not off, none or dhcp")));
    };
    Ok(IpParam { config: Some(config), device, hostname })
}

/// The classful default prefix Linux uses when `ip=` gives no netmask.
fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Where the configuration in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// The kernel command line's `ip=`.
    Cmdline,
    /// `/etc/mantle/network.conf`.
    File,
    /// Neither gave one: DHCP.
    Default,
}

/// The configuration vmk0 starts with: `ip=` on the kernel command line wins (unless
/// `ip=off`), then `/etc/mantle/network.conf` (`conf`, its text if the file exists),
/// else DHCP. Errors are returned for the log next to the configuration used instead:
/// a bad `ip=` falls back to the file, a bad file to DHCP — the host always comes up
/// reachable.
pub fn boot_config(cmdline: &str, conf: Option<&str>) -> (NetConfig, ConfigSource, Vec<ConfigError>) {
    let mut errors = Vec::new();
    match parse_cmdline(cmdline) {
        Ok(Some(IpParam { config: Some(config), .. })) => return (config, ConfigSource::Cmdline, errors),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    if let Some(text) = conf {
        match NetConfig::parse_conf(text) {
            Ok(config) => return (config, ConfigSource::File, errors),
            Err(e) => errors.push(e),
        }
    }
    (NetConfig::default(), ConfigSource::Default, errors)
}

/// The text of `/etc/resolv.conf` for these DNS servers.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    let mut out = String::from("# written by the Mantle network stack\n");
    for server in dns {
        let _ = writeln!(out, "nameserver {server}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn parses_static_conf_with_comments_and_dns_lists() {
        let text = "# vmk0\n\n mode = static \naddress=192.168.1.10/24\ngateway=192.168.1.1\ndns=192.168.1.1, 9.9.9.9\n";
        let config = NetConfig::parse_conf(text).unwrap();
        assert_eq!(
            config.mode,
            AddressMode::Static {
                address: Ipv4Addr::new(192, 168, 1, 10),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(192, 168, 1, 1))
            }
        );
        assert_eq!(config.dns, vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(9, 9, 9, 9)]);
        assert_eq!(NetConfig::parse_conf(&config.to_conf_text()).unwrap(), config);
    }

    #[test]
    fn parses_dhcp_and_round_trips() {
        let config = NetConfig::parse_conf("mode=dhcp\n").unwrap();
        assert_eq!(config, NetConfig::default());
        assert_eq!(NetConfig::parse_conf(&config.to_conf_text()).unwrap(), config);
    }

    #[test]
    fn refuses_bad_conf_with_line_numbers() {
        let cases = [
            ("mode=static\n", 1, "needs address"),
            ("mode=dhcp\naddress=10.0.0.2/24\n", 2, "only for mode=static"),
            ("mode=static\naddress=10.0.0.2\n", 2, "prefix length"),
            ("mode=static\naddress=10.0.0.2/33\n", 2, "not in 1..=32"),
            ("mode=static\naddress=10.0.0.2/24\ngateway=10.0.1.1\n", 3, "not another host"),
            ("mode=fast\n", 1, "dhcp or static"),
            ("mode=dhcp\ncolour=blue\n", 2, "unknown key"),
            ("mode=dhcp\njunk\n", 2, "key=value"),
            ("mode=dhcp\ndns=1.2.3.4,5.6.7.8,9.9.9.9,1.1.1.1\n", 2, "at most"),
            ("mode=static\naddress=0.0.0.0/8\n", 2, "not a usable"),
        ];
        for (text, line, needle) in cases {
            let e = NetConfig::parse_conf(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
        assert_eq!(NetConfig::parse_conf("# nothing\n").unwrap_err().line, 0);
    }

    #[test]
    fn parses_linux_nfsroot_ip_parameter() {
        let p = parse_cmdline("console=ttyS0 ip=10.0.0.2::10.0.0.1:255.255.255.0::vmk0:off quiet").unwrap().unwrap();
        assert_eq!(p.device.as_deref(), Some("vmk0"));
        let config = p.config.unwrap();
        assert_eq!(
            config.mode,
            AddressMode::Static {
                address: Ipv4Addr::new(10, 0, 0, 2),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1))
            }
        );
        let p = parse_ip_param("192.168.7.9:::255.255.0.0:host1:eth0:none:192.168.0.53").unwrap();
        assert_eq!(p.hostname.as_deref(), Some("host1"));
        let c = p.config.unwrap();
        assert_eq!(c.dns, vec![Ipv4Addr::new(192, 168, 0, 53)]);
        assert!(matches!(c.mode, AddressMode::Static { prefix_len: 16, gateway: None, .. }));
        // No netmask: classful default, as Linux does.
        let c = parse_ip_param("10.1.2.3::::::off").unwrap().config.unwrap();
        assert!(matches!(c.mode, AddressMode::Static { prefix_len: 8, .. }));
        assert_eq!(parse_ip_param("dhcp").unwrap().config, Some(NetConfig::default()));
        assert_eq!(parse_ip_param(":::::vmk0:dhcp").unwrap().config.unwrap().mode, AddressMode::Dhcp);
        assert_eq!(parse_ip_param("off").unwrap().config, None);
        assert_eq!(parse_cmdline("console=ttyS0").unwrap(), None);
    }

    #[test]
    fn refuses_bad_ip_parameters() {
        for bad in [
            "banana",
            "10.0.0.300::::::off",
            "10.0.0.2:::255.0.255.0:::off",
            "::::::off",
            "10.0.0.2::10.9.9.9:255.255.255.0:::off",
            "10.0.0.2::::::static",
            "1:2:3:4:5:6:7:8:9:10",
        ] {
            assert!(parse_ip_param(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn boot_config_prefers_cmdline_then_file_then_dhcp() {
        let file = "mode=static\naddress=10.1.1.5/16\n";
        let (c, src, errs) = boot_config("quiet ip=10.0.0.2::10.0.0.1:255.255.255.0::vmk0:off", Some(file));
        assert_eq!((src, errs.len()), (ConfigSource::Cmdline, 0));
        assert!(matches!(c.mode, AddressMode::Static { prefix_len: 24, .. }));
        let (c, src, _) = boot_config("ip=off", Some(file));
        assert_eq!(src, ConfigSource::File);
        assert!(matches!(c.mode, AddressMode::Static { prefix_len: 16, .. }));
        // A bad ip= is reported and the file is used.
        let (_, src, errs) = boot_config("ip=10.0.0.999::::::off", Some(file));
        assert_eq!((src, errs.len()), (ConfigSource::File, 1));
        // A bad file is reported and DHCP keeps the host reachable.
        let (c, src, errs) = boot_config("", Some("mode=static\n"));
        assert_eq!((c, src, errs.len()), (NetConfig::default(), ConfigSource::Default, 1));
        assert_eq!(boot_config("", None).1, ConfigSource::Default);
    }

    #[test]
    fn netmask_conversions() {
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(prefix_to_netmask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(prefix_to_netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(resolv_conf(&[Ipv4Addr::new(10, 0, 2, 3)]).lines().last(), Some("nameserver 10.0.2.3"));
    }
}
