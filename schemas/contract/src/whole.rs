//! Whole numbers as JSON Schema reads them: `3`, `3.0` and `3e0` are one integer. serde's own
//! `u64` refuses the last two, so a request the OpenAPI document calls valid would be refused.
//! The request types read their integer fields with these (`#[serde(deserialize_with)]`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// An unsigned integer type a request field may have.
pub trait Whole: TryFrom<u64> {
    const MAX: u64;
}

impl Whole for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Whole for u64 {
    const MAX: u64 = u64::MAX;
}

struct Reader<T>(PhantomData<T>);

impl<T: Whole> Visitor<'_> for Reader<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", T::MAX)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // 2^64 is the first float past u64::MAX.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            self.visit_u64(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

/// A value read by [`Reader`].
struct Read<T>(T);

impl<'de, T: Whole> Deserialize<'de> for Read<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Reader(PhantomData)).map(Read)
    }
}

/// A required whole-number field.
pub fn required<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
    Read::deserialize(d).map(|Read(v)| v)
}

/// An optional whole-number field (`null` or absent is `None`; give it `#[serde(default)]`).
pub fn optional<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Read<T>>::deserialize(d).map(|v| v.map(|Read(v)| v))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::optional")]
        n: Option<u32>,
        #[serde(deserialize_with = "super::required")]
        m: u64,
    }

    fn read(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_integral_float_is_the_integer() {
        let b = read(r#"{"n": 3.0, "m": 1e3}"#).unwrap();
        assert_eq!((b.n, b.m), (Some(3), 1000));
        let b = read(r#"{"n": null, "m": 18446744073709551615}"#).unwrap();
        assert_eq!((b.n, b.m), (None, u64::MAX));
        assert_eq!(read(r#"{"m": 0}"#).unwrap().n, None);
    }

    #[test]
    fn fractions_negatives_strings_and_overflows_are_refused() {
        for bad in [
            r#"{"n": 1.5, "m": 1}"#,
            r#"{"n": -1, "m": 1}"#,
            r#"{"n": "1", "m": 1}"#,
            r#"{"n": 4294967296, "m": 1}"#,
            r#"{"m": 1.8446744073709552e19}"#,
            r#"{"m": -0.5}"#,
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains("a whole number from 0 to"), "{bad}: {e}");
        }
    }
}
