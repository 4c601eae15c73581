//! The common names in a certificate's subject, which the front proxy's allowed names
//! are matched against. Read from DER that rustls has already verified, so only the
//! few elements on the way to the subject are walked.

/// `id-at-commonName` (2.5.4.3), as DER object identifier contents.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// The `[0]` tag of an explicit TBSCertificate version.
const VERSION: u8 = 0xa0;

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, b| len << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The elements of a SEQUENCE's or SET's contents, in order.
fn elements(mut contents: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, value, rest) = element(contents)?;
        contents = rest;
        Some((tag, value))
    })
}

/// The subject's common names; none when the certificate has none (or is not DER).
pub fn common_names(cert: &[u8]) -> Vec<String> {
    subject(cert)
        .map(|name| {
            elements(name)
                .flat_map(|(_, rdn)| elements(rdn))
                .filter_map(|(_, attribute)| {
                    let mut parts = elements(attribute);
                    let (_, oid) = parts.next()?;
                    let (_, value) = parts.next()?;
                    (oid == COMMON_NAME).then(|| String::from_utf8_lossy(value).into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The contents of the subject Name: the sixth field of the TBSCertificate, or the
/// fifth when it has no version.
fn subject(cert: &[u8]) -> Option<&[u8]> {
    let (_, certificate, _) = element(cert)?;
    let (_, tbs, _) = element(certificate)?;
    let mut fields = elements(tbs).peekable();
    if fields.peek()?.0 == VERSION {
        fields.next();
    }
    // serialNumber, signature, issuer, validity, then subject.
    fields.nth(4).map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_of_a_generated_certificate_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["x.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_names(cert.der()), ["front-proxy-client"]);
        let mut unnamed = rcgen::CertificateParams::new(vec!["x.example".into()]).unwrap();
        unnamed.distinguished_name = rcgen::DistinguishedName::new();
        let cert = unnamed.self_signed(&key).unwrap();
        assert!(common_names(cert.der()).is_empty());
        assert!(common_names(b"not DER").is_empty());
    }
}
