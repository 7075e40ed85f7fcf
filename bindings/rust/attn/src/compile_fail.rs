// SPDX-License-Identifier: MIT
//! What a program using this crate must not be able to write, so that
//! libattn's growth (new enum values, struct fields, strides) never breaks
//! it: doc tests that must fail to compile, as they would in a crate of
//! its own. Each names the error it is for, but stable rustdoc checks only
//! that the code fails, not the error code (that is nightly-only): a typo
//! would pass too. So each was also seen to fail with its own error, and to
//! compile once the promise it tests was lifted (the attribute removed, the
//! constructor made public).

/// `LayerConfig` cannot be written as a struct literal, not even with a
/// functional update from a config one has (E0639), so it may gain fields.
///
/// ```compile_fail,E0639
/// let layer = attn::Layer::builder(8).build().unwrap();
/// let c = attn::LayerConfig {
///     embed_dim: 16,
///     ..layer.config().clone()
/// };
/// ```
pub struct LayerConfigIsNotALiteral;

/// `RopeConfig` cannot be written as a struct literal either (E0639).
///
/// ```compile_fail,E0639
/// let layer = attn::Layer::builder(8)
///     .rope(attn::Rope::new())
///     .build()
///     .unwrap();
/// let r = attn::RopeConfig {
///     theta: 500.0,
///     ..layer.config().rope.clone().unwrap()
/// };
/// ```
pub struct RopeConfigIsNotALiteral;

/// `BiasParts` cannot be written as a struct literal (E0639): it is built
/// from its constants and `with_*` methods, so it may gain fields. (Its
/// private field of unknown bits alone would forbid this too: E0451.)
///
/// ```compile_fail,E0639
/// let parts = attn::BiasParts {
///     q: true,
///     ..attn::BiasParts::NONE
/// };
/// ```
pub struct BiasPartsIsNotALiteral;

/// A program cannot make an `Unknown` variant: `UnknownValue`'s field is
/// private (E0423), ...
///
/// ```compile_fail,E0423
/// let norm = attn::QkNorm::Unknown(attn::UnknownValue(1));
/// ```
///
/// ... and so is its constructor (E0624).
///
/// ```compile_fail,E0624
/// let norm = attn::QkNorm::Unknown(attn::UnknownValue::new(1));
/// ```
pub struct UnknownIsOnlyMadeByTheCrate;

/// A `match` on a public enum without a wildcard arm does not compile
/// (E0004), even one that names every variant and `Unknown`: a variant
/// added later goes to the wildcard arm.
///
/// ```compile_fail,E0004
/// fn name(n: attn::QkNorm) -> &'static str {
///     match n {
///         attn::QkNorm::None => "none",
///         attn::QkNorm::Head => "per head",
///         attn::QkNorm::All => "whole projection",
///         attn::QkNorm::Unknown(_) => "a newer mode",
///     }
/// }
/// ```
pub struct EnumsNeedAWildcardArm;

/// `BiasShape::Strided` is not written as a struct-like variant (E0639):
/// it is made with `BiasShape::strided`, ...
///
/// ```compile_fail,E0639
/// let shape = attn::BiasShape::Strided {
///     batch: 0,
///     head: 0,
///     query: 4,
/// };
/// ```
///
/// ... and its patterns end in `..` (E0638), so it may gain strides.
///
/// ```compile_fail,E0638
/// let shape = attn::BiasShape::strided(0, 0, 4);
/// if let attn::BiasShape::Strided { batch, head, query } = shape {
///     assert_eq!(batch + head + query, 4);
/// }
/// ```
pub struct StridedIsMadeWithItsConstructor;
