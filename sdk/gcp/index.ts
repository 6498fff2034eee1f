/**
 * GCI on GCP: images stored in a storage location; a group in a region whose location the
 * catalog says lacks the image declares a copy there, then instances in a zone.
 */
export { Image, imageProblems } from "./image";
export type {
  CopiedImageSource,
  DiskImportSource,
  ExistingImageSource,
  ImageArgs,
  ImageSource,
} from "./image";
export { VirtualMachineGroup } from "./group";
export { imageIdProblems, planVirtualMachineGroup, virtualMachineGroupProblems } from "./plan";
export type { GcpGroupPlan, GcpImageReference, GcpImageSourcePlan, VirtualMachineGroupArgs } from "./plan";
