"""The NAT lab: network namespaces with home routers of each RFC 4787 type.

``natlab.lab`` builds and tears down the topology; ``natlab.probe`` measures a router;
``natlab.punch`` runs peerings between placements (sessions over punched UDP).
"""
