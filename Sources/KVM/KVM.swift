// KVM: being written.
