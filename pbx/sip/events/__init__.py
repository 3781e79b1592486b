"""Event package bodies for SIP subscriptions (RFC 6665 4.4): one module per package."""
