package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// clusterFileName is written by `fluxon up` in its work directory so that
// `fluxon status` run from the same directory finds the cluster on its own.
const clusterFileName = "cluster.json"

// defaultWorkDir is where `fluxon up` keeps its state.
const defaultWorkDir = ".fluxon"

type clusterFile struct {
	ClusterName   string   `json:"cluster_name"`
	EtcdEndpoints []string `json:"etcd_endpoints"`
	EtcdPeer      string   `json:"etcd_peer"`
	PID           int      `json:"pid"`
}

func writeClusterFile(dir string, cf clusterFile) error {
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, clusterFileName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, clusterFileName))
}

func readClusterFile(dir string) (clusterFile, error) {
	var cf clusterFile
	b, err := os.ReadFile(filepath.Join(dir, clusterFileName))
	if err != nil {
		return cf, err
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return cf, fmt.Errorf("%s: %w", filepath.Join(dir, clusterFileName), err)
	}
	if len(cf.EtcdEndpoints) == 0 || cf.ClusterName == "" {
		return cf, errors.New(filepath.Join(dir, clusterFileName) + ": missing cluster_name or etcd_endpoints")
	}
	return cf, nil
}
