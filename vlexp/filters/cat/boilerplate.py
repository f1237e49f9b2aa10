"""Shop boilerplate: captions that sell rather than describe ("Sale! 50% off all dresses").

Web alt-text is full of product-listing and advertising text. Parsed, such a caption can
look complex ("Free shipping on orders over $50": shipping -on- orders -over- $50), yet
it says nothing about what the image shows. The complexity criterion therefore scores a
caption 0 when it carries any of these signals (case-insensitive, on the raw text):

- a **price**: a currency sign or code next to a number ("$50", "19.99 EUR", "£5"),
  except a banknote or coin named right after it ("a $20 bill");
- a **percentage** ("50%", "20 percent");
- a **sales phrase** (:data:`SALES_PHRASES`: "sale!", "on sale", "free shipping",
  "shop now", "coupon", "buy 2 get 1", ...). Words that scenes use too are not: "a
  garage sale", "shipping containers", "a checkout counter", "a low clearance sign".
"""

from __future__ import annotations

import re

_CURRENCY = r"(?:[$£€¥₹]|\b(?:usd|eur|gbp|aud|cad|inr)\b|\brs\.?)"
_NUMBER = r"\d+(?:[.,]\d+)*(?![.,]?\d)"  # the whole number (no backtracking into it)
_MONEY_OBJECT = r"(?:\s*-?\s*(?:dollar|euro|pound)?s?\s*(?:bill|note|coin|banknote)s?\b)"

PRICE = re.compile(
    rf"{_CURRENCY}\s?{_NUMBER}(?!{_MONEY_OBJECT})|\b{_NUMBER}\s?{_CURRENCY}(?!{_MONEY_OBJECT})"
)
"""A currency sign or code before or after a number, not followed by "bill", "coin", ..."""

PERCENTAGE = re.compile(rf"\b{_NUMBER}\s?(?:%|percent\b|per cent\b)")
"""A number with a per-cent sign or word."""

SALES_PHRASES: tuple[str, ...] = (
    "sale!",
    "on sale",
    "big sale",
    "flash sale",
    "summer sale",
    "clearance sale",
    "sale ends",
    "free shipping",
    "fast shipping",
    "worldwide shipping",
    "shipping worldwide",
    "ships free",
    "free delivery",
    "shop now",
    "buy now",
    "order now",
    "order today",
    "add to cart",
    "in stock",
    "out of stock",
    "best price",
    "lowest price",
    "discount code",
    "coupon",
    "promo code",
    "at checkout",
)
"""Phrases that only advertising uses (whole words; a plural or "-ed" form counts too)."""

_SALES = re.compile(
    r"\b(?:"
    + "|".join(re.escape(p) for p in SALES_PHRASES)
    + r")(?:s|ed)?(?!\w)|\bbuy (?:\d+|one|two),? get (?:\d+|one)\b"
)


def is_boilerplate(caption: str) -> bool:
    """Whether ``caption`` carries a price, a percentage or a sales phrase."""
    text = caption.lower()
    return bool(PRICE.search(text) or PERCENTAGE.search(text) or _SALES.search(text))
