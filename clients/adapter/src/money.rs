//! Provider prices into exact [`Money`] (units + nanos), never through a float: Twilio sends
//! decimal strings ("-0.00750"), OpenRouter JSON numbers (0.000123), Retell cents (12.5).
use std::str::FromStr;

use maxai_proto::maxai::common::v1::Money;
use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;

const NANOS_PER_UNIT: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyError(pub String);

impl std::fmt::Display for MoneyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not an amount: {}", self.0)
    }
}

impl std::error::Error for MoneyError {}

/// An exact decimal amount; digits beyond nanos are rounded half to even.
pub fn from_decimal(amount: Decimal, currency: &str) -> Result<Money, MoneyError> {
    let nanos_total = amount
        .checked_mul(Decimal::from(NANOS_PER_UNIT))
        .ok_or_else(|| MoneyError(amount.to_string()))?
        .round_dp(0);
    let total = nanos_total
        .to_i128()
        .ok_or_else(|| MoneyError(amount.to_string()))?;
    let units = i64::try_from(total / NANOS_PER_UNIT as i128)
        .map_err(|_| MoneyError(amount.to_string()))?;
    let nanos = (total % NANOS_PER_UNIT as i128) as i32;
    Ok(Money {
        currency_code: currency.to_ascii_uppercase(),
        units,
        nanos,
    })
}

/// Decimal text such as "-0.00750", "12", "1.5E-7".
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let text = text.trim();
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .or_else(|_| Decimal::from_str(text))
        .map_err(|_| MoneyError(text.to_owned()))
}

pub fn from_decimal_str(text: &str, currency: &str) -> Result<Money, MoneyError> {
    from_decimal(parse_decimal(text)?, currency)
}

/// A JSON number from its text. serde_json without `arbitrary_precision` already holds a
/// fraction as an `f64`, whose shortest text keeps the ~15 significant digits a price has; read
/// the field as `serde_json::value::RawValue` and use [`from_decimal_str`] where more matter.
pub fn from_json_number(number: &serde_json::Number, currency: &str) -> Result<Money, MoneyError> {
    from_decimal_str(&number.to_string(), currency)
}

/// An amount given in minor units with `exponent` decimals (cents: 2), possibly fractional
/// ("12.5" cents).
pub fn from_minor_units(minor: &str, exponent: u32, currency: &str) -> Result<Money, MoneyError> {
    let minor = parse_decimal(minor)?;
    let scale = Decimal::from(10i64.pow(exponent));
    from_decimal(minor / scale, currency)
}

pub fn to_decimal(money: &Money) -> Decimal {
    Decimal::from(money.units) + Decimal::new(money.nanos as i64, 9)
}

pub fn negate(money: &Money) -> Money {
    Money {
        currency_code: money.currency_code.clone(),
        units: -money.units,
        nanos: -money.nanos,
    }
}

pub fn abs(money: &Money) -> Money {
    if money.units < 0 || money.nanos < 0 {
        negate(money)
    } else {
        money.clone()
    }
}

/// The sum of amounts of one currency; `None` for an empty list or mixed currencies.
pub fn sum<'a>(amounts: impl IntoIterator<Item = &'a Money>) -> Option<Money> {
    let mut iter = amounts.into_iter();
    let first = iter.next()?;
    let mut total = to_decimal(first);
    for m in iter {
        if m.currency_code != first.currency_code {
            return None;
        }
        total += to_decimal(m);
    }
    from_decimal(total, &first.currency_code).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(units: i64, nanos: i32) -> Money {
        Money {
            currency_code: "USD".into(),
            units,
            nanos,
        }
    }

    #[test]
    fn decimal_strings_are_exact() {
        assert_eq!(
            from_decimal_str("-0.00750", "usd").unwrap(),
            m(0, -7_500_000)
        );
        assert_eq!(from_decimal_str("12", "USD").unwrap(), m(12, 0));
        assert_eq!(from_decimal_str("1.5E-7", "USD").unwrap(), m(0, 150));
        assert_eq!(
            from_decimal_str("-3.25", "USD").unwrap(),
            m(-3, -250_000_000)
        );
        assert!(from_decimal_str("about 3", "USD").is_err());
        // Too large for nanos in an i64 is an error, not a panic.
        assert!(from_decimal_str("79228162514264337593543950335", "USD").is_err());
    }

    #[test]
    fn json_numbers_are_read_from_their_text() {
        let n: serde_json::Number = serde_json::from_str("0.000123").unwrap();
        assert_eq!(from_json_number(&n, "USD").unwrap(), m(0, 123_000));
        let n: serde_json::Number = serde_json::from_str("0.1").unwrap();
        assert_eq!(from_json_number(&n, "USD").unwrap(), m(0, 100_000_000));
    }

    #[test]
    fn minor_units_and_sums() {
        assert_eq!(
            from_minor_units("12.5", 2, "USD").unwrap(),
            m(0, 125_000_000)
        );
        assert_eq!(
            from_minor_units("1999", 2, "USD").unwrap(),
            m(19, 990_000_000)
        );
        let total = sum([&m(0, 600_000_000), &m(0, 700_000_000), &m(1, 0)]).unwrap();
        assert_eq!(total, m(2, 300_000_000));
        let eur = Money {
            currency_code: "EUR".into(),
            units: 1,
            nanos: 0,
        };
        assert_eq!(sum([&m(1, 0), &eur]), None);
        assert_eq!(abs(&m(0, -7_500_000)), m(0, 7_500_000));
    }
}
