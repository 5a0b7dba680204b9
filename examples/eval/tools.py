"""The example's tools: weather, currency, orders. Deterministic, so scores are repeatable."""

from __future__ import annotations

WEATHER = {
    "paris": "sunny, 21°C",
    "oslo": "snow, -4°C",
    "lima": "cloudy, 18°C",
    "cairo": "clear, 33°C",
    "tokyo": "rain, 15°C",
    "berlin": "windy, 9°C",
}
RATES = {("EUR", "USD"): 1.08, ("USD", "EUR"): 0.93, ("GBP", "EUR"): 1.17, ("USD", "JPY"): 151.0}
ORDERS = {
    "A17": "shipped, arrives Friday",
    "B22": "delivered",
    "C09": "being packed",
    "D44": "delayed at customs",
    "E51": "cancelled by the shop",
}


def get_weather(city: str) -> str:
    """The weather now in a city.

    Args:
        city: the city's name
    """
    return f"{city}: {WEATHER.get(city.lower(), 'no data')}"


def convert_currency(amount: float, source: str, target: str) -> str:
    """Convert an amount of money between currencies.

    Args:
        amount: how much
        source: the currency code to convert from, e.g. EUR
        target: the currency code to convert to, e.g. USD
    """
    rate = RATES.get((source.upper(), target.upper()))
    if rate is None:
        return f"no rate for {source}->{target}"
    return f"{amount:g} {source.upper()} = {amount * rate:.2f} {target.upper()}"


def order_status(order_id: str) -> str:
    """The status of an order.

    Args:
        order_id: the order's id, e.g. A17
    """
    return f"order {order_id}: {ORDERS.get(order_id.upper(), 'unknown order')}"


def cancel_order(order_id: str) -> str:
    """Cancel an order (cannot be undone).

    Args:
        order_id: the order's id
    """
    return f"order {order_id} cancelled"


TOOLS = [get_weather, convert_currency, order_status, cancel_order]
