"""The offload card's management plane on each host.

The agent registers with the control plane, keeps a bidirectional
``AgentService.Connect`` stream open (heartbeats and status up, desired
state down) and reconciles the host: cloud disks, vhost-user backends, VPC
fabric and server power.
"""
