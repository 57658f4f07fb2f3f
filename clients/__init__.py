"""HTTP clients for the vendors' APIs: Persona (events and inquiries) and Verisoul (accounts)."""
