//! The one piece of DER this crate reads itself: a PKCS#1 `RSAPublicKey`
//! (`SEQUENCE { INTEGER n, INTEGER e }`), to learn the modulus size.

/// Splits a PKCS#1 `RSAPublicKey` into its modulus and exponent (big-endian, as encoded).
pub(crate) fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, body, rest) = tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, n, body) = tlv(body)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, e, rest) = tlv(body)?;
    if tag != 0x02 || !rest.is_empty() {
        return None;
    }
    Some((n, e))
}

/// One tag-length-value: (tag, value, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if input.len() < len {
        return None;
    }
    let (value, rest) = input.split_at(len);
    Some((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        // SEQUENCE { INTEGER 0x00C1, INTEGER 0x010001 }
        let der = [
            0x30, 0x09, 0x02, 0x02, 0x00, 0xC1, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        assert_eq!(
            rsa_public_key(&der),
            Some((&[0x00, 0xC1][..], &[1, 0, 1][..]))
        );
        assert_eq!(rsa_public_key(&der[..5]), None);
        assert_eq!(rsa_public_key(&[]), None);
        assert_eq!(rsa_public_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert_eq!(rsa_public_key(&trailing), None);
    }
}
