"""Related-work memories beside the attractor layer, behind one interface (`base.Memory`)."""
