"""TAP devices and the VPC fabric (bridge + VXLAN per VPC) via pyroute2, plus
the card's DHCP and metadata services.
"""
