"""The Mac host: "UTM.app" (:mod:`.utm_app`), the utmctl emulator (:mod:`.utmctl`) and QEMU with its
HXFR frame-export server (:mod:`.qemu`)."""
