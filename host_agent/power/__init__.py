"""Power drivers for the physical server: ``qemu`` (a QEMU process stands in
for the motherboard) and ``fake`` (for control-plane scale tests).
"""
