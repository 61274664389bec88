//! A decoded pickle ([`Plain`]) as a serde `Deserializer`, so that it
//! becomes any Rust type, with the conventions serde-pickle writes: `None`
//! is `Option::None` and `()`, a dict is a map or a struct (its items in
//! Python's order), a list, tuple or set is a sequence, and an enum is its
//! variant's name (unit), or a one-item dict (or pair) from the name to
//! the variant's contents.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::build::{a, Plain};

/// Why a decoded value does not fit the Rust type, with the Python type of
/// the innermost value that did not.
#[derive(Debug)]
pub(crate) struct Mismatch {
    message: String,
    python_type: Option<&'static str>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.python_type {
            Some(python) => write!(f, "{} (the Python value is {})", self.message, a(python)),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Mismatch {}

impl de::Error for Mismatch {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Mismatch {
            message: message.to_string(),
            python_type: None,
        }
    }
}

type Result<T> = std::result::Result<T, Mismatch>;

/// Names the Python type of `value` in an error from visiting it, unless an
/// inner value named its own already.
fn naming<T>(python_type: &'static str, result: Result<T>) -> Result<T> {
    result.map_err(|mut e| {
        e.python_type.get_or_insert(python_type);
        e
    })
}

/// An int beyond 64 bits (pickle's two's complement, little-endian), as
/// the narrowest of i64, u64, i128 and u128 that holds it.
fn visit_big<'de, V: Visitor<'de>>(bytes: &[u8], visitor: V) -> Result<V::Value> {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    // Without the bytes that only extend the sign.
    let len = bytes.iter().rposition(|&b| b != fill).map_or(0, |i| i + 1);
    if len <= 16 {
        let mut word = [fill; 16];
        word[..len].copy_from_slice(&bytes[..len]);
        let wide = i128::from_le_bytes(word);
        if (wide < 0) == negative {
            if let Ok(narrow) = i64::try_from(wide) {
                return visitor.visit_i64(narrow);
            }
            if let Ok(narrow) = u64::try_from(wide) {
                return visitor.visit_u64(narrow);
            }
            return visitor.visit_i128(wide);
        }
        if !negative {
            return visitor.visit_u128(u128::from_le_bytes(word));
        }
    }
    Err(de::Error::custom(format!(
        "a Python int of {} bits is beyond what a Rust integer holds (128 bits); \
         decode_value keeps it whole",
        bytes.len() * 8
    )))
}

impl<'de> de::Deserializer<'de> for Plain {
    type Error = Mismatch;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let python_type = self.python_type();
        let visited = match self {
            Plain::None => visitor.visit_unit(),
            Plain::Bool(b) => visitor.visit_bool(b),
            Plain::Int(i) => visitor.visit_i64(i),
            Plain::BigInt(bytes) => visit_big(&bytes, visitor),
            Plain::Float(f) => visitor.visit_f64(f),
            Plain::Bytes(bytes) => visitor.visit_byte_buf(bytes),
            Plain::Str(text) => visitor.visit_string(text),
            Plain::List(items)
            | Plain::Tuple(items)
            | Plain::Set(items)
            | Plain::FrozenSet(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.into_iter());
                visitor
                    .visit_seq(&mut seq)
                    .and_then(|value| seq.end().map(|()| value))
            }
            Plain::Dict(items) => {
                let mut map = de::value::MapDeserializer::new(items.into_iter());
                visitor
                    .visit_map(&mut map)
                    .and_then(|value| map.end().map(|()| value))
            }
        };
        naming(python_type, visited)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self {
            Plain::None => visitor.visit_none(),
            some => visitor.visit_some(some),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self {
            // Python's `()` is Rust's `()` too.
            Plain::Tuple(items) if items.is_empty() => visitor.visit_unit(),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let python_type = self.python_type();
        let not_an_enum = || {
            naming(
                python_type,
                Err(de::Error::custom(
                    "an enum is its variant's name, or a dict of one item from the name \
                     to the variant's contents",
                )),
            )
        };
        let (variant, contents) = match self {
            Plain::Str(_) => (self, None),
            Plain::Dict(items) => match <[(Plain, Plain); 1]>::try_from(items) {
                Ok([(name, contents)]) => (name, Some(contents)),
                Err(_) => return not_an_enum(),
            },
            Plain::Tuple(items) => {
                let mut items = items.into_iter();
                match (items.next(), items.next(), items.next()) {
                    (Some(name), contents, None) => (name, contents),
                    _ => return not_an_enum(),
                }
            }
            _ => return not_an_enum(),
        };
        visitor.visit_enum(Variant { variant, contents })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map struct identifier
    }
}

impl<'de> IntoDeserializer<'de, Mismatch> for Plain {
    type Deserializer = Plain;

    fn into_deserializer(self) -> Plain {
        self
    }
}

/// An enum's variant name and what it holds.
struct Variant {
    variant: Plain,
    contents: Option<Plain>,
}

/// What an enum's variant holds, if anything.
struct Contents(Option<Plain>);

impl Contents {
    fn held(self) -> Result<Plain> {
        self.0
            .ok_or_else(|| de::Error::custom("the enum variant holds nothing"))
    }
}

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = Mismatch;
    type Variant = Contents;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Contents)> {
        Ok((seed.deserialize(self.variant)?, Contents(self.contents)))
    }
}

impl<'de> de::VariantAccess<'de> for Contents {
    type Error = Mismatch;

    fn unit_variant(self) -> Result<()> {
        match self.0 {
            None | Some(Plain::None) => Ok(()),
            Some(_) => Err(de::Error::custom("a unit variant holds something")),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value> {
        seed.deserialize(self.held()?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_any(self.held()?, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_any(self.held()?, visitor)
    }
}
