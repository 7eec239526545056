"""Small operator tools the ops playbooks call (cart backup, gRPC/mTLS probe)."""
