"""Local stand-ins for the Stripe and Plaid APIs, serving the synthetic generator's history.

The real ``stripe`` and ``plaid-python`` SDKs reach them only through their base address:

* Stripe: ``stripe.StripeClient(key, base_addresses={"api": servers.stripe_url})`` with
  ``key = "sk_test_standin"`` and ``stripe_account=<acct_...>`` per tenant;
* Plaid: ``plaid.Configuration(host=servers.plaid_url, api_key={"clientId": ..., "secret": ...})``
  and ``access_token = "access-sandbox-<item_id>"``.

Start them with :meth:`StandinServers.start` or ``python -m ledger_assets.lib.standins``.
"""

from ledger_assets.lib.standins.live import LiveRates
from ledger_assets.lib.standins.plaid_store import access_token_for
from ledger_assets.lib.standins.server import (
    DEFAULT_PLAID_CLIENT_ID,
    DEFAULT_PLAID_SECRET,
    DEFAULT_STRIPE_API_KEY,
    DEFAULT_STRIPE_WEBHOOK_SECRET,
    StandinConfig,
    StandinServers,
)

__all__ = [
    "DEFAULT_PLAID_CLIENT_ID",
    "DEFAULT_PLAID_SECRET",
    "DEFAULT_STRIPE_API_KEY",
    "DEFAULT_STRIPE_WEBHOOK_SECRET",
    "LiveRates",
    "StandinConfig",
    "StandinServers",
    "access_token_for",
]
