"""The shard process: thousands of fake kubelets and their pods in one trio process."""
