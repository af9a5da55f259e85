//! Physical Region Page entries (NVMe 1.4 §4.3): how a transfer's memory
//! is described to the controller. PRP1 points at the first byte (any
//! dword-aligned address); if the transfer spans exactly two pages PRP2
//! is the second page, otherwise PRP2 points at a list of the remaining
//! page addresses.

/// The two PRP fields of a command, and how many list entries were used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prps {
    pub prp1: u64,
    pub prp2: u64,
    pub list_entries: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrpError {
    /// Zero bytes, or a start that is not dword-aligned.
    BadBuffer,
    /// More pages than the list holds.
    TooLong,
    /// The list is not one page-aligned page (chained lists are not built).
    BadList,
}

/// PRPs for `len` bytes of physically contiguous memory at `addr`, with
/// controller page size `page`; list entries, when needed, go to `list`
/// (which the controller sees at `list_phys`).
pub fn build(addr: u64, len: usize, page: usize, list: &mut [u64], list_phys: u64) -> Result<Prps, PrpError> {
    if len == 0 || !addr.is_multiple_of(4) || page == 0 || !page.is_power_of_two() {
        return Err(PrpError::BadBuffer);
    }
    let page64 = page as u64;
    let first = page - (addr % page64) as usize;
    if len <= first {
        return Ok(Prps { prp1: addr, prp2: 0, list_entries: 0 });
    }
    let rest = len - first;
    let next = addr + first as u64;
    if rest <= page {
        return Ok(Prps { prp1: addr, prp2: next, list_entries: 0 });
    }
    if !list_phys.is_multiple_of(page64) || list.len() > page / 8 {
        return Err(PrpError::BadList);
    }
    let pages = rest.div_ceil(page);
    let slots = list.get_mut(..pages).ok_or(PrpError::TooLong)?;
    for (i, slot) in slots.iter_mut().enumerate() {
        *slot = next + (i * page) as u64;
    }
    Ok(Prps { prp1: addr, prp2: list_phys, list_entries: pages })
}

/// The longest transfer one list page allows for a page-aligned buffer.
pub fn max_transfer(page: usize) -> usize {
    (page / 8 + 1) * page
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = 4096;

    #[test]
    fn one_page_needs_no_prp2() {
        let mut l = [0; 512];
        assert_eq!(build(0x10000, 512, P, &mut l, 0x9000), Ok(Prps { prp1: 0x10000, prp2: 0, list_entries: 0 }));
        assert_eq!(build(0x10000, P, P, &mut l, 0x9000).unwrap().prp2, 0);
        // Unaligned but within the page.
        assert_eq!(build(0x10e00, 512, P, &mut l, 0x9000).unwrap().prp2, 0);
    }

    #[test]
    fn two_pages_put_the_second_in_prp2() {
        let mut l = [0; 512];
        assert_eq!(build(0x10000, 2 * P, P, &mut l, 0x9000), Ok(Prps { prp1: 0x10000, prp2: 0x11000, list_entries: 0 }));
        // An offset start spills into a second page.
        assert_eq!(build(0x10e00, 1024, P, &mut l, 0x9000).unwrap().prp2, 0x11000);
    }

    #[test]
    fn longer_transfers_use_the_list() {
        let mut l = [0; 512];
        let p = build(0x10000, 3 * P, P, &mut l, 0x9000).unwrap();
        assert_eq!(p, Prps { prp1: 0x10000, prp2: 0x9000, list_entries: 2 });
        assert_eq!(&l[..2], &[0x11000, 0x12000]);
        // Unaligned start: the rest of the first page, then whole pages, a partial last one.
        let p = build(0x10200, 2 * P + 1024, P, &mut l, 0x9000).unwrap();
        assert_eq!(p.list_entries, 2);
        assert_eq!(&l[..2], &[0x11000, 0x12000]);
        // 256 KiB: 1 in PRP1, 63 in the list.
        assert_eq!(build(0x100000, 64 * P, P, &mut l, 0x9000).unwrap().list_entries, 63);
    }

    #[test]
    fn bounds_are_errors() {
        let mut l = [0; 512];
        assert_eq!(build(0x10000, 0, P, &mut l, 0x9000), Err(PrpError::BadBuffer));
        assert_eq!(build(0x10002, 8, P, &mut l, 0x9000), Err(PrpError::BadBuffer));
        assert_eq!(build(0x10000, max_transfer(P), P, &mut l, 0x9000).unwrap().list_entries, 512);
        assert_eq!(build(0x10000, max_transfer(P) + 1, P, &mut l, 0x9000), Err(PrpError::TooLong));
        let mut short = [0; 2];
        assert_eq!(build(0x10000, 4 * P, P, &mut short, 0x9000), Err(PrpError::TooLong));
        assert_eq!(build(0x10000, 4 * P, P, &mut l, 0x9008), Err(PrpError::BadList));
        let mut long = [0; 513];
        assert_eq!(build(0x10000, 4 * P, P, &mut long, 0x9000), Err(PrpError::BadList));
    }
}
