"""Reference data: currency and country codes, disposable mailboxes, USD reference rates."""
