//! Fixed-size little-endian records.
//!
//! Every table in an image is an array of one record type. A record is a
//! sequence of fields with no padding, encoded little-endian at fixed offsets,
//! so the no_std shim decodes one with a few loads and no allocation. Records
//! only grow at the end (see the compatibility rule in `lib.rs`): a reader
//! that knows fewer fields ignores the tail, a reader that knows more refuses a
//! table whose records are too short.

/// A field type with a fixed little-endian encoding.
pub trait Field: Sized + Copy {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Write `self` into `out[..Self::SIZE]`.
    fn put(&self, out: &mut [u8]);
    /// Read from `b[..Self::SIZE]`.
    fn get(b: &[u8]) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            #[inline]
            fn put(&self, out: &mut [u8]) {
                out[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; core::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, i32, i64);

impl<T: Field + Default, const N: usize> Field for [T; N] {
    const SIZE: usize = T::SIZE * N;
    #[inline]
    fn put(&self, out: &mut [u8]) {
        for (i, v) in self.iter().enumerate() {
            v.put(&mut out[i * T::SIZE..]);
        }
    }
    #[inline]
    fn get(b: &[u8]) -> Self {
        let mut a = [T::default(); N];
        for (i, v) in a.iter_mut().enumerate() {
            *v = T::get(&b[i * T::SIZE..]);
        }
        a
    }
}

/// A table record: a fixed-size struct of [`Field`]s.
pub trait Record: Sized + Copy {
    /// Encoded size in bytes (the sum of the fields' sizes).
    const SIZE: usize;
    /// Encode into `out[..Self::SIZE]`.
    fn encode(&self, out: &mut [u8]);
    /// Decode from `b[..Self::SIZE]` (the caller checked the length).
    fn decode(b: &[u8]) -> Self;
}

/// Defines a record struct and its encoding, field by field in order.
macro_rules! record {
    (
        $(#[$m:meta])*
        pub struct $name:ident {
            $( $(#[$fm:meta])* pub $f:ident : $t:ty, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[cfg_attr(feature = "std", derive(serde::Serialize))]
        pub struct $name {
            $( $(#[$fm])* pub $f: $t, )*
        }
        impl $crate::record::Record for $name {
            const SIZE: usize = 0 $( + <$t as $crate::record::Field>::SIZE )*;
            #[allow(unused_assignments)]
            fn encode(&self, out: &mut [u8]) {
                let mut off = 0usize;
                $(
                    $crate::record::Field::put(&self.$f, &mut out[off..]);
                    off += <$t as $crate::record::Field>::SIZE;
                )*
            }
            #[allow(unused_assignments)]
            fn decode(b: &[u8]) -> Self {
                let mut off = 0usize;
                $(
                    let $f = <$t as $crate::record::Field>::get(&b[off..]);
                    off += <$t as $crate::record::Field>::SIZE;
                )*
                Self { $($f,)* }
            }
        }
        impl $crate::record::Field for $name {
            const SIZE: usize = <$name as $crate::record::Record>::SIZE;
            fn put(&self, out: &mut [u8]) {
                $crate::record::Record::encode(self, out)
            }
            fn get(b: &[u8]) -> Self {
                <$name as $crate::record::Record>::decode(b)
            }
        }
    };
}
pub(crate) use record;
