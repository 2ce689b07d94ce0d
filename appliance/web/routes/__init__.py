"""The routers, one module per part of the product; each router is one access area."""
