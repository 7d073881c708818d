"""Operations with one entry point each and an implementation per device (paste-back)."""
