//! Money without floats.
//!
//! Every amount in normalized data is a [`Money`]: an integer count of **micro-units**
//! (millionths of the currency's major unit: 1 USD = 1 000 000) and an upper-case ISO 4217
//! currency code. Micro-units hold every provider's amounts exactly: Stripe's minor units,
//! PayPal's and Twilio's decimal strings (Twilio prices have 5 decimals, e.g. `-0.00750`) and
//! Retell's fractional cents (`70.5` cents = 705 000). Anything finer than a micro-unit is
//! rounded half to even. An `i64` of micro-units reaches about 9.2 × 10¹² major units.
//!
//! Conversions work on decimal text, never on binary floating point. A JSON number that is not
//! an integer (Retell's cents) is taken as the shortest decimal text that reads back as the
//! same number, which is the text the provider sent for any value with up to 15 significant
//! digits.
use serde_json::{json, Number, Value};

/// Micro-units per major unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// An amount of money: integer micro-units of the currency's major unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Millionths of the major unit (USD 1.25 is 1 250 000). Negative for a credit or refund.
    pub amount_micros: i64,
    /// Upper-case ISO 4217 code; `None` when the provider does not say (GHL opportunity values
    /// are in the location's currency, which the webhook does not name).
    pub currency: Option<String>,
}

impl Money {
    /// The JSON form used in normalized data: `{"amount_micros": <integer>, "currency": "USD"}`.
    pub fn to_json(&self) -> Value {
        json!({ "amount_micros": self.amount_micros, "currency": self.currency })
    }

    /// A decimal string in major units (`"20.00"`, `"-0.00750"`).
    pub fn from_decimal(text: &str, currency: Option<&str>) -> Option<Money> {
        Some(Money {
            amount_micros: decimal_to_scaled(text, 6)?,
            currency: currency.map(str::to_ascii_uppercase),
        })
    }

    /// An integer amount in Stripe's minor unit of `currency` (see [`stripe_exponent`]).
    pub fn from_stripe_minor(amount: i64, currency: &str) -> Option<Money> {
        let currency = currency.to_ascii_uppercase();
        let factor = 10_i64.pow(6 - stripe_exponent(&currency));
        Some(Money {
            amount_micros: amount.checked_mul(factor)?,
            currency: Some(currency),
        })
    }
}

/// Decimal places of Stripe's minor unit for `currency` (upper case), per Stripe's currency
/// list: zero-decimal currencies count whole units (JPY 500 is `500`), three-decimal ones
/// thousandths, all others cents. (ISK, HUF and TWD are two-decimal in Stripe's API.)
pub fn stripe_exponent(currency: &str) -> u32 {
    const ZERO: [&str; 16] = [
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];
    if ZERO.contains(&currency) {
        0
    } else if THREE.contains(&currency) {
        3
    } else {
        2
    }
}

/// `text × 10^shift` as an integer, computed exactly on the decimal text and rounded half to
/// even when `text` has more than `shift` decimals. `text` is an optionally signed decimal with
/// an optional fraction and exponent (`-0.00750`, `70.5`, `1.5e-3`). `None` when it is not a
/// decimal, has more than 36 significant digits, or the result does not fit an `i64`.
///
/// `decimal_to_scaled("-0.00750", 6) == Some(-7500)`; `decimal_to_scaled("70.5", 4) ==
/// Some(705000)` (cents to micro-units).
pub fn decimal_to_scaled(text: &str, shift: u32) -> Option<i64> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = int
        .bytes()
        .chain(frac.bytes())
        .skip_while(|&b| b == b'0')
        .collect::<Vec<u8>>();
    if significant.len() > 36 {
        return None;
    }
    let mut value: i128 = 0;
    for digit in significant {
        value = value * 10 + i128::from(digit - b'0');
    }
    // value × 10^(exponent + shift − decimals)
    let power = i64::from(exponent) + i64::from(shift) - i64::try_from(frac.len()).ok()?;
    let scaled = if power >= 0 {
        let power = u32::try_from(power).ok().filter(|&p| p <= 38)?;
        if value == 0 {
            0
        } else {
            value.checked_mul(10_i128.checked_pow(power)?)?
        }
    } else if -power > 38 {
        // value < 10^36 is less than half of the divisor: rounds to zero.
        0
    } else {
        let divisor = 10_i128.pow(u32::try_from(-power).ok()?);
        let (quotient, remainder) = (value / divisor, value % divisor);
        let twice = remainder * 2;
        if twice > divisor || (twice == divisor && quotient % 2 == 1) {
            quotient + 1
        } else {
            quotient
        }
    };
    let signed = if negative { -scaled } else { scaled };
    i64::try_from(signed).ok()
}

/// [`decimal_to_scaled`] of a JSON number: integers exactly, other numbers through their
/// shortest round-trip decimal text (never exponent notation).
pub(crate) fn number_to_scaled(number: &Number, shift: u32) -> Option<i64> {
    if let Some(i) = number.as_i64() {
        decimal_to_scaled(&i.to_string(), shift)
    } else if let Some(u) = number.as_u64() {
        decimal_to_scaled(&u.to_string(), shift)
    } else {
        let f = number.as_f64()?;
        if !f.is_finite() {
            return None;
        }
        decimal_to_scaled(&format!("{f}"), shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_scale_exactly() {
        assert_eq!(decimal_to_scaled("-0.00750", 6), Some(-7500));
        assert_eq!(decimal_to_scaled("20.00", 6), Some(20_000_000));
        assert_eq!(decimal_to_scaled("0.0079", 6), Some(7900));
        assert_eq!(decimal_to_scaled("70.5", 4), Some(705_000));
        assert_eq!(decimal_to_scaled("12", 0), Some(12));
        assert_eq!(decimal_to_scaled(".5", 1), Some(5));
        assert_eq!(decimal_to_scaled("5.", 1), Some(50));
        assert_eq!(decimal_to_scaled("+1.5e-3", 6), Some(1500));
        assert_eq!(decimal_to_scaled("1E2", 0), Some(100));
        assert_eq!(decimal_to_scaled("-0", 6), Some(0));
        assert_eq!(decimal_to_scaled("0.000", 6), Some(0));
        assert_eq!(
            decimal_to_scaled("9223372036854.775807", 6),
            Some(i64::MAX),
            "the largest amount that fits"
        );
        assert_eq!(decimal_to_scaled("9223372036854.775808", 6), None);
    }

    #[test]
    fn finer_than_the_scale_rounds_half_to_even() {
        assert_eq!(decimal_to_scaled("0.0000005", 6), Some(0));
        assert_eq!(decimal_to_scaled("0.0000015", 6), Some(2));
        assert_eq!(decimal_to_scaled("0.00000151", 6), Some(2));
        assert_eq!(decimal_to_scaled("0.0000025", 6), Some(2));
        assert_eq!(decimal_to_scaled("-0.0000025", 6), Some(-2));
        assert_eq!(decimal_to_scaled("-0.0000035", 6), Some(-4));
        assert_eq!(decimal_to_scaled("1.23456789", 4), Some(12346));
        assert_eq!(decimal_to_scaled("1e-60", 6), Some(0));
    }

    #[test]
    fn non_decimals_are_refused() {
        for bad in [
            "",
            "-",
            ".",
            "1.2.3",
            "1,5",
            "0x10",
            "NaN",
            "inf",
            " 1",
            "1 ",
            "1e",
            "1e9999999999",
        ] {
            assert_eq!(decimal_to_scaled(bad, 6), None, "{bad:?}");
        }
        assert_eq!(decimal_to_scaled(&"1".repeat(37), 0), None);
        assert_eq!(decimal_to_scaled("1e40", 0), None);
    }

    #[test]
    fn json_numbers_convert_through_their_decimal_text() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(number_to_scaled(&n("70.5"), 4), Some(705_000));
        assert_eq!(number_to_scaled(&n("0.1"), 6), Some(100_000));
        assert_eq!(number_to_scaled(&n("12.3456"), 4), Some(123_456));
        assert_eq!(number_to_scaled(&n("1e-7"), 7), Some(1));
        assert_eq!(number_to_scaled(&n("1500"), 6), Some(1_500_000_000));
        assert_eq!(number_to_scaled(&n("18446744073709551615"), 0), None);
    }

    #[test]
    fn stripe_minor_units_follow_the_currency_exponent() {
        let usd = Money::from_stripe_minor(2000, "usd").unwrap();
        assert_eq!(usd.amount_micros, 20_000_000);
        assert_eq!(usd.currency.as_deref(), Some("USD"));
        assert_eq!(
            Money::from_stripe_minor(500, "jpy").unwrap().amount_micros,
            500_000_000
        );
        assert_eq!(
            Money::from_stripe_minor(1234, "kwd").unwrap().amount_micros,
            1_234_000
        );
        assert!(Money::from_stripe_minor(i64::MAX, "usd").is_none());
        assert_eq!(
            Money::from_decimal("-0.00750", Some("usd"))
                .unwrap()
                .to_json(),
            json!({"amount_micros": -7500, "currency": "USD"})
        );
    }
}
